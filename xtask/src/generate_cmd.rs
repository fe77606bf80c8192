//! `generate`: continue one or more prompts with the llm-infer engine; `quantize`: save a
//! model's int8 weights.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use llm_infer::{
    quantized, Engine, Event, Finish, KvDtype, Output, Quant, Request, SamplingParams, SlotCache,
};
use llm_model::backend::{run_on, BackendTask};
use llm_model::KernelBackend;
use serde_json::Value;

use crate::args::{positive, temperature};
use crate::model_cmd::{resolve, ModelArgs, Resolved};
use crate::tokenizer::SpecialPolicy;
use llm_infer::load::{check_vocab, load_model};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prompt text; repeat for several prompts, generated in one batch.
    #[arg(long)]
    prompt: Vec<String>,
    /// A prompt as token ids (`--prompt-ids 6109,3626`); repeatable.
    #[arg(long, conflicts_with = "prompt")]
    prompt_ids: Vec<String>,
    /// A JSON-lines file of prompts: `{"prompt": "text"}` or `{"prompt_ids": [6109, 3626]}`
    /// per line.
    #[arg(long, conflicts_with_all = ["prompt", "prompt_ids"])]
    prompts_file: Option<PathBuf>,
    /// Special-token text such as `<|endoftext|>` in prompt text.
    #[arg(long, value_enum, default_value = "raise")]
    special: SpecialPolicy,
    /// New tokens to generate for each prompt. The model sees at most its context
    /// (n_positions) of tokens: a longer prompt is cut to its last n_positions, and once
    /// the context is full, generation goes on from the last n_positions / 2 tokens.
    #[arg(long, default_value_t = 50, value_parser = positive, allow_negative_numbers = true)]
    max_new_tokens: usize,
    /// A finite number ≥ 0; 0 is greedy (the default).
    #[arg(long, default_value_t = 0.0, value_parser = temperature, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample only from the k most likely tokens (k ≥ 1).
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    top_k: Option<usize>,
    /// Sample from the smallest set of tokens whose probability reaches p, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Drop tokens less likely than min-p × the most likely one, in [0, 1].
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_p: f32,
    /// Greater than 0; 1 is none. Divides positive logits (multiplies negative ones) of
    /// tokens already in the sequence.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    repetition_penalty: f32,
    /// In [-2, 2], subtracted from the logit of every token generated so far (OpenAI's).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// In [-2, 2], times how often a token was generated (OpenAI's).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// Stop before this text (not printed); repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Stop once `<|endoftext|>` is generated.
    #[arg(long)]
    stop_at_eot: bool,
    /// Every prompt samples with this seed, so a prompt's output does not depend on the
    /// others in its batch.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Weights: `f32`, or `q8` (int8 Q8_0, quantized at load). A model saved by
    /// `cargo xtask quantize` is int8 already.
    #[arg(long)]
    quant: Option<Quant>,
    /// Sequences generated at once (the engine's batch slots); further prompts join as
    /// others finish.
    #[arg(long, default_value_t = 8, value_parser = positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// How the KV cache stores keys and values: `f32`, or `f16` (half the memory).
    #[arg(long, default_value = "f32")]
    kv_cache: KvDtype,
    /// Print one JSON line per prompt, in input order:
    /// `{"ids": [prompt + new], "new_ids": [...], "text": "...", "finish_reason": "stop"|"length"}`.
    #[arg(long)]
    json: bool,
}

impl GenerateArgs {
    fn params(&self, eot: Option<u32>) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            stop_ids: eot.filter(|_| self.stop_at_eot).into_iter().collect(),
            stop: self.stop.clone(),
            top_logprobs: 0,
        }
    }

    /// The prompts as token ids, in input order.
    fn prompts(&self, resolved: &Resolved) -> Result<Vec<Vec<u32>>> {
        let encode = |text: &str, what: &str| {
            self.special
                .encode(&resolved.tokenizer, text)
                .with_context(|| format!("encoding {what}"))
        };
        if let Some(path) = &self.prompts_file {
            return read_prompts_file(path, |text, line| {
                encode(text, &format!("{}:{line}", path.display()))
            });
        }
        let prompts: Vec<Vec<u32>> = if !self.prompt.is_empty() {
            (self.prompt.iter())
                .map(|p| encode(p, "--prompt"))
                .collect::<Result<_>>()?
        } else {
            (self.prompt_ids.iter())
                .map(|ids| crate::tokenizer::parse_ids("--prompt-ids", ids))
                .collect::<Result<_>>()?
        };
        if prompts.is_empty() {
            bail!("give --prompt, --prompt-ids or --prompts-file");
        }
        Ok(prompts)
    }
}

/// Reads `{"prompt": "text"}` / `{"prompt_ids": [..]}` lines; errors name the file and line.
fn read_prompts_file(
    path: &std::path::Path,
    encode: impl Fn(&str, usize) -> Result<Vec<u32>>,
) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --prompts-file {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let prompt = match (v.get("prompt"), v.get("prompt_ids")) {
            (Some(Value::String(s)), None) => encode(s, i + 1)?,
            (None, Some(ids)) => serde_json::from_value::<Vec<u32>>(ids.clone())
                .with_context(|| format!("{}: \"prompt_ids\" must be a list of token ids", at()))?,
            _ => bail!(
                "{}: expected {{\"prompt\": \"text\"}} or {{\"prompt_ids\": [ids]}}",
                at()
            ),
        };
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        bail!("--prompts-file {} holds no prompts", path.display());
    }
    Ok(prompts)
}

struct GenerateTask<'a> {
    args: &'a GenerateArgs,
    resolved: &'a Resolved,
    prompts: Vec<Vec<u32>>,
}

impl BackendTask for GenerateTask<'_> {
    type Output = Result<()>;

    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let model = load_model::<B>(&self.resolved.source, self.args.quant, &device)?;
        let tok = Arc::new(self.resolved.tokenizer.clone());
        check_vocab(&tok, model.vocab_size())?;
        let n_positions = model.n_positions();
        for (i, p) in self.prompts.iter().enumerate() {
            let which = match self.prompts.len() {
                1 => "the prompt".to_string(),
                _ => format!("prompt {}", i + 1),
            };
            note_context(&which, p.len(), self.args.max_new_tokens, n_positions);
        }
        let slots = self.args.batch_size.min(self.prompts.len());
        // The cache holds the longest sequence these prompts can make, not more.
        let longest = self.prompts.iter().map(Vec::len).max().unwrap_or(0);
        let capacity = (longest + self.args.max_new_tokens).min(n_positions);
        let cache =
            SlotCache::with_capacity(&model.config, slots, capacity, self.args.kv_cache, &device)?;
        let mut engine = Engine::with_cache(model, Some(tok.clone()), cache);
        let params = self.args.params(tok.eot_id());
        let requests = (self.prompts.iter())
            .map(|p| Request {
                prompt: p.clone(),
                params: params.clone(),
                truncate_left: true,
                prompt_logprobs: false,
            })
            .collect();
        let stream = !self.args.json && self.prompts.len() == 1;
        let mut out = std::io::stdout().lock();
        let mut print_error = None;
        let outputs = engine.generate_with(requests, |_, e: &Event| {
            if stream && print_error.is_none() {
                if let Err(e) = out.write_all(e.text.as_bytes()).and_then(|_| out.flush()) {
                    print_error = Some(e);
                }
            }
        })?;
        if let Some(e) = print_error {
            return Err(e).context("writing to stdout");
        }
        print_outputs(&mut out, &outputs, self.args.json, stream).context("writing to stdout")
    }
}

fn print_outputs(
    out: &mut impl Write,
    outputs: &[Output],
    json: bool,
    streamed: bool,
) -> std::io::Result<()> {
    for (i, o) in outputs.iter().enumerate() {
        if json {
            let ids: Vec<u32> = o.prompt.iter().chain(&o.new_ids).copied().collect();
            let finish = match o.finish {
                Finish::Stop => "stop",
                Finish::Length => "length",
            };
            let v = serde_json::json!({
                "ids": ids, "new_ids": o.new_ids, "text": o.text, "finish_reason": finish,
            });
            writeln!(out, "{v}")?;
        } else if streamed {
            writeln!(out)?;
        } else {
            writeln!(out, "── prompt {} ──\n{}", i + 1, o.text)?;
        }
    }
    Ok(())
}

/// Says on stderr when the model will not see the whole text (see `--max-new-tokens`).
fn note_context(which: &str, prompt: usize, new: usize, n_positions: usize) {
    if prompt > n_positions {
        eprintln!(
            "note: {which} has {prompt} tokens and the model's context holds {n_positions}: it sees the last {n_positions}"
        );
    } else if prompt + new > n_positions {
        eprintln!(
            "note: {which} ({prompt} tokens) and {new} new tokens exceed the model's context of {n_positions}: once it is full, generation goes on from the last {} tokens",
            (n_positions / 2).max(1)
        );
    }
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let resolved = resolve(&args.model)?;
    // Refuse bad sampling parameters by name before loading the model.
    if let Err(e) = args.params(None).validate() {
        match e {
            llm_model::ModelError::Param { param, message } => {
                bail!("--{} {message}", param.replace('_', "-"))
            }
            other => return Err(other.into()),
        }
    }
    let prompts = args.prompts(&resolved)?;
    run_on(
        resolved.backend,
        GenerateTask {
            args: &args,
            resolved: &resolved,
            prompts,
        },
    )?
}

#[derive(Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Directory to write the int8 model into (config.json, model.safetensors,
    /// tokenizer.json; the layout is in docs/infer.md). `--model DIR` loads it back.
    #[arg(long)]
    out: PathBuf,
}

struct QuantizeTask<'a> {
    args: &'a QuantizeArgs,
    resolved: &'a Resolved,
}

impl BackendTask for QuantizeTask<'_> {
    type Output = Result<()>;

    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let model = load_model::<B>(&self.resolved.source, Some(Quant::Q8), &device)?;
        check_vocab(&self.resolved.tokenizer, model.vocab_size())?;
        let out = &self.args.out;
        quantized::save_quantized(&model, out)?;
        (self.resolved.tokenizer)
            .save_tokenizer_json(out.join("tokenizer.json"))
            .with_context(|| format!("writing the tokenizer into {}", out.display()))?;
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        let f32_bytes = 4 * model.config.num_params();
        println!(
            "wrote {}: int8 Q8_0 weights, {:.1} MiB (f32: {:.1} MiB)",
            out.display(),
            mib(model.weight_bytes()),
            mib(f32_bytes)
        );
        Ok(())
    }
}

pub fn quantize(args: QuantizeArgs) -> Result<()> {
    let resolved = resolve(&args.model)?;
    run_on(
        resolved.backend,
        QuantizeTask {
            args: &args,
            resolved: &resolved,
        },
    )?
}
