//! `chat`: a terminal conversation with a model through its chat template, streamed;
//! `serve`: the OpenAI-compatible server (`llm_infer::server`).

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use llm_bpe::{Allowed, Tokenizer};
use llm_infer::chat::{ChatTemplate, Message, Role};
use llm_infer::{Engine, InferModel, Quant, Request, SamplingParams};
use llm_model::backend::{run_on, BackendTask};
use llm_model::KernelBackend;

use crate::args::{positive, temperature};
use crate::model_cmd::{resolve, ModelArgs, Resolved};
use llm_infer::load::{check_vocab, load_model};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Weights: `f32`, or `q8` (int8 Q8_0, quantized at load).
    #[arg(long)]
    quant: Option<Quant>,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    /// The longest answer, in tokens.
    #[arg(long, default_value_t = 256, value_parser = positive, allow_negative_numbers = true)]
    max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.7, value_parser = temperature, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample from the smallest set of tokens whose probability reaches p, in (0, 1].
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let resolved = resolve(&args.model)?;
    run_on(
        resolved.backend,
        ChatTask {
            args: &args,
            resolved: &resolved,
        },
    )?
}

/// Drops the oldest exchanges (keeping the system message and the last question) until
/// the conversation's prompt is at most `budget` tokens, and returns the prompt. It is
/// longer only when the last question alone does not fit.
fn fit_conversation(
    template: ChatTemplate,
    tokenizer: &Tokenizer,
    history: &mut Vec<Message>,
    budget: usize,
) -> Result<Vec<u32>> {
    loop {
        let ids = tokenizer.encode_with(&template.render(history), Allowed::AsText)?;
        let first = history.iter().position(|m| m.role != Role::System);
        let questions = history.iter().filter(|m| m.role == Role::User).count();
        match (first, ids.len() <= budget || questions < 2) {
            (Some(i), false) => {
                let next = (i + 1..history.len())
                    .find(|&j| history[j].role == Role::User)
                    .unwrap_or(history.len());
                history.drain(i..next);
            }
            _ => return Ok(ids),
        }
    }
}

/// `cargo xtask serve`: the same server as the `llm-serve` binary.
pub fn serve(args: llm_infer::server::ServeArgs) -> Result<()> {
    llm_infer::server::serve(args)
}

struct ChatTask<'a> {
    args: &'a ChatArgs,
    resolved: &'a Resolved,
}

impl BackendTask for ChatTask<'_> {
    type Output = Result<()>;

    fn run<B: KernelBackend>(self, device: B::Device) -> Result<()> {
        let model = load_model::<B>(&self.resolved.source, self.args.quant, &device)?;
        check_vocab(&self.resolved.tokenizer, model.vocab_size())?;
        let tokenizer = Arc::new(self.resolved.tokenizer.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
        let mut chat = Chat {
            engine: Engine::new(model, Some(tokenizer.clone()), 1, &device),
            tokenizer,
            template: self.resolved.template,
            history: Vec::new(),
            args: self.args,
            stop,
            turn: 0,
        };
        chat.reset();
        eprintln!(
            "chat template: {}. /reset clears the conversation, /quit (or Ctrl-D) leaves; Ctrl-C stops an answer.",
            chat.template.name()
        );
        chat.run()
    }
}

struct Chat<'a, B: KernelBackend> {
    engine: Engine<B>,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    history: Vec<Message>,
    args: &'a ChatArgs,
    /// Set by Ctrl-C: stop the answer being written.
    stop: Arc<AtomicBool>,
    turn: u64,
}

impl<B: KernelBackend> Chat<'_, B> {
    fn model(&self) -> &InferModel<B> {
        self.engine.model()
    }

    fn reset(&mut self) {
        self.history.clear();
        if let Some(system) = &self.args.system {
            self.history
                .push(Message::new(Role::System, system.clone()));
        }
    }

    /// Reads a line at a time until `/quit` or the end of input.
    fn run(&mut self) -> Result<()> {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            eprint!("> ");
            line.clear();
            if stdin.lock().read_line(&mut line)? == 0 {
                return Ok(());
            }
            match line.trim() {
                "" => continue,
                "/quit" | "/exit" => return Ok(()),
                "/reset" => {
                    self.reset();
                    eprintln!("(conversation cleared)");
                }
                text => {
                    self.history.push(Message::new(Role::User, text));
                    let answer = self.answer()?;
                    self.history.push(Message::new(Role::Assistant, answer));
                }
            }
        }
    }

    /// The prompt for the conversation, within the context, and the room for the answer.
    fn prompt(&mut self) -> Result<(Vec<u32>, usize)> {
        let n_positions = self.model().n_positions();
        let wanted = self.args.max_new_tokens.min(n_positions / 2);
        let fitted = fit_conversation(
            self.template,
            &self.tokenizer,
            &mut self.history,
            n_positions - wanted,
        )?;
        if fitted.len() > n_positions - wanted {
            let keep = n_positions - wanted;
            eprintln!(
                "(the message is too long for the context: the model sees its last {keep} tokens)"
            );
            return Ok((fitted[fitted.len() - keep..].to_vec(), wanted));
        }
        Ok((fitted, wanted))
    }

    /// Streams the model's answer to stdout; Ctrl-C stops it.
    fn answer(&mut self) -> Result<String> {
        let (prompt, max_new_tokens) = self.prompt()?;
        self.turn += 1;
        let params = SamplingParams {
            max_new_tokens,
            temperature: self.args.temperature,
            top_p: self.args.top_p,
            seed: self.args.seed.wrapping_add(self.turn),
            stop_ids: self.tokenizer.eot_id().into_iter().collect(),
            stop: self.template.stop(),
            ..Default::default()
        };
        let id = self.engine.add(Request {
            prompt,
            params,
            truncate_left: true,
            prompt_logprobs: false,
        })?;
        self.stop.store(false, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let mut answer = String::new();
        'generate: loop {
            if self.stop.swap(false, Ordering::SeqCst) {
                self.engine.cancel(id);
                writeln!(out, " [stopped]")?;
                break;
            }
            for e in self.engine.step()? {
                out.write_all(e.text.as_bytes())?;
                out.flush()?;
                answer.push_str(&e.text);
                if e.finish.is_some() {
                    writeln!(out)?;
                    break 'generate;
                }
            }
        }
        Ok(answer.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_turns_go_first_and_the_system_message_and_last_question_stay() {
        let tok = Tokenizer::gpt2();
        let mut history = vec![Message::new(Role::System, "Be brief.")];
        for i in 0..10 {
            history.push(Message::new(Role::User, format!("Question number {i}?")));
            history.push(Message::new(Role::Assistant, format!("Answer number {i}.")));
        }
        history.push(Message::new(Role::User, "The last question?"));
        let ids = fit_conversation(ChatTemplate::Alpaca, &tok, &mut history, 120).unwrap();
        assert!(ids.len() <= 120, "{} tokens", ids.len());
        assert_eq!(history[0].content, "Be brief.");
        assert_eq!(history.last().unwrap().content, "The last question?");
        assert!(history.len() < 22, "old turns were dropped");
        assert_eq!(history[1].role, Role::User, "whole exchanges go");
        // Everything fits: nothing is dropped.
        let mut short = vec![Message::new(Role::User, "Hi")];
        fit_conversation(ChatTemplate::Plain, &tok, &mut short, 120).unwrap();
        assert_eq!(short.len(), 1);
    }
}
