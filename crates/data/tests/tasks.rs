//! Instruction, spam and preference datasets.

mod common;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use common::*;
use llm_bpe::chat::{ChatTemplate, Message, Role};
use llm_bpe::Tokenizer;
use llm_data::dpo::{load_preferences, PreferenceBatch, PreferenceBatcher, PreferenceDataset};
use llm_data::instruct::{
    format_example, format_input, load_instructions, split_instructions, InstructionBatch,
    InstructionBatcher, InstructionDataset, InstructionExample, InstructionItem, IGNORE_INDEX,
    RESPONSE_HEADER,
};
use llm_data::spam::{balanced, load_sms, split_spam, SpamBatch, SpamBatcher, SpamDataset};

fn example(input: &str) -> InstructionExample {
    InstructionExample {
        instruction: "Convert to passive voice.".into(),
        input: input.into(),
        output: "The cake was baked by Tom.".into(),
    }
}

#[test]
fn alpaca_prompt_template() {
    assert_eq!(
        format_example(&example("Tom baked the cake.")),
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\
         \n\n### Instruction:\nConvert to passive voice.\n\n### Input:\nTom baked the cake.\n\n### Response:\nThe cake was baked by Tom."
    );
    assert!(!format_input(&example("")).contains("### Input:"));
    // A one-question chat through the Alpaca chat template is the training prompt.
    let chat =
        ChatTemplate::Alpaca.render(&[Message::new(Role::User, "Convert to passive voice.")]);
    assert_eq!(
        chat,
        format!("{}{RESPONSE_HEADER}", format_input(&example("")))
    );
}

#[test]
fn collate_pads_and_ignores_all_but_the_first_end_token() {
    let items = vec![
        InstructionItem {
            ids: vec![0, 1, 2, 3, 4],
            prompt_len: 3,
        },
        InstructionItem {
            ids: vec![5, 6],
            prompt_len: 1,
        },
        InstructionItem {
            ids: vec![7, 8, 9],
            prompt_len: 2,
        },
    ];
    let batcher = InstructionBatcher::default();
    let (inputs, targets, len) = batcher.collate(&items);
    let p = 50256i64;
    let x = IGNORE_INDEX;
    assert_eq!(len, 5);
    // The walkthrough's example: inputs padded with 50256, targets shifted, with the first
    // 50256 kept as the end token to learn and the rest ignored.
    assert_eq!(inputs, [0, 1, 2, 3, 4, 5, 6, p, p, p, 7, 8, 9, p, p]);
    assert_eq!(targets, [1, 2, 3, 4, p, 6, p, x, x, x, 8, 9, p, x, x]);

    let masked = InstructionBatcher {
        mask_prompt: true,
        ..InstructionBatcher::default()
    };
    let (_, targets, _) = masked.collate(&items);
    assert_eq!(targets, [x, x, 3, 4, p, 6, p, x, x, x, x, 9, p, x, x]);

    let cut = InstructionBatcher {
        max_length: Some(3),
        ..InstructionBatcher::default()
    };
    let b: InstructionBatch<B> = cut.batch(items, &Default::default());
    assert_eq!(b.inputs.dims(), [3, 3]);
    assert_eq!(ints(b.targets), [1, 2, 3, 6, p, x, 8, 9, p]);
}

#[test]
fn instruction_data_tokenizes_and_splits_85_5_10() {
    let examples = load_instructions(&asset("instruction-data.json")).unwrap();
    assert_eq!(examples.len(), 1100);
    let (train, val, test) = split_instructions(&examples, 123).unwrap();
    assert_eq!((train.len(), val.len(), test.len()), (935, 55, 110));
    assert_eq!(split_instructions(&examples, 123).unwrap().0, train);
    let tok = Tokenizer::gpt2();
    let ds = InstructionDataset::new(&train, &tok).unwrap();
    let item = ds.get(0).unwrap();
    assert_eq!(tok.decode(&item.ids).unwrap(), format_example(&train[0]));
    let prompt = tok.decode(&item.ids[..item.prompt_len]).unwrap();
    assert!(prompt.ends_with("### Response:\n"), "{prompt:?}");
    // Bad files name themselves.
    let err = load_instructions(&asset("the-verdict.txt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the-verdict.txt"), "{err}");
}

#[test]
fn spam_is_balanced_split_and_padded() {
    let all = load_sms(&asset("SMSSpamCollection.tsv")).unwrap();
    assert_eq!(all.len(), 5574);
    assert_eq!(all.iter().filter(|e| e.label == 1).count(), 747);
    let bal = balanced(&all, 123);
    assert_eq!(bal.len(), 1494);
    assert_eq!(bal.iter().filter(|e| e.label == 1).count(), 747);
    let (train, val, test) = split_spam(&bal, 123).unwrap();
    assert_eq!((train.len(), val.len(), test.len()), (1045, 149, 300));

    let tok = Tokenizer::gpt2();
    let ds = SpamDataset::new(&train[..8], &tok, None);
    let items: Vec<_> = (0..8).map(|i| ds.get(i).unwrap()).collect();
    let batch: SpamBatch<B> = SpamBatcher::default().batch(items.clone(), &Default::default());
    let longest = ds.longest();
    assert_eq!(batch.inputs.dims(), [8, longest]);
    assert_eq!(
        ints(batch.labels),
        items.iter().map(|i| i.label as i64).collect::<Vec<_>>()
    );
    let rows = ints(batch.inputs);
    let last = ints(batch.last_index);
    for (r, item) in items.iter().enumerate() {
        let row = &rows[r * longest..(r + 1) * longest];
        assert_eq!(
            row[..item.ids.len()],
            item.ids.iter().map(|&t| t as i64).collect::<Vec<_>>()[..]
        );
        assert!(row[item.ids.len()..].iter().all(|&t| t == 50256));
        assert_eq!(last[r] as usize, item.ids.len() - 1);
    }

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("sms.tsv");
    std::fs::write(&bad, "ham\tfine\nspam offer without a tab\n").unwrap();
    let err = load_sms(&bad).unwrap_err().to_string();
    assert!(err.contains("sms.tsv") && err.contains("line 2"), "{err}");
}

#[test]
fn preference_pairs_mask_the_responses() {
    let examples = load_preferences(&asset("instruction-data-with-preference.json")).unwrap();
    assert_eq!(examples.len(), 1100);
    let tok = Tokenizer::gpt2();
    let ds = PreferenceDataset::new(&examples[..4], &tok).unwrap();
    let items: Vec<_> = (0..4).map(|i| ds.get(i).unwrap()).collect();
    let batch: PreferenceBatch<B> =
        PreferenceBatcher::default().batch(items.clone(), &Default::default());
    let len = items
        .iter()
        .map(|i| i.chosen.len().max(i.rejected.len()))
        .max()
        .unwrap();
    assert_eq!(batch.chosen.dims(), [4, len]);
    assert_eq!(batch.rejected.dims(), [4, len]);
    let mask: Vec<f32> = batch.chosen_mask.into_data().iter::<f32>().collect();
    let chosen = ints(batch.chosen);
    for (r, item) in items.iter().enumerate() {
        let m = &mask[r * len..(r + 1) * len];
        let on: Vec<u32> = (0..len)
            .filter(|&p| m[p] == 1.0)
            .map(|p| chosen[r * len + p] as u32)
            .collect();
        // The masked-in tokens decode to exactly the chosen response.
        assert_eq!(tok.decode(&on).unwrap(), examples[r].chosen);
        assert_eq!(
            m.iter().filter(|&&v| v == 1.0).count(),
            item.chosen.len() - item.prompt_len
        );
    }
}
