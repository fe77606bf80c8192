//! Chat templates: how a conversation becomes the prompt a model was trained on. As in
//! Hugging Face, where `apply_chat_template` belongs to the tokenizer, the template is a
//! text format that sits with tokenization: instruction data (`llm-data`) writes its
//! training prompts with these strings, and the server and chat (`llm-infer`) render
//! conversations with them.
//!
//! A checkpoint from `finetune --task instruct` (or `dpo`) records `prompt_template:
//! "alpaca"`; such a model gets the Alpaca template it learned. Any other model gets
//! [`ChatTemplate::Plain`], a transcript of `User:` / `Assistant:` lines.

/// The Alpaca template's name, as checkpoints record it.
pub const PROMPT_TEMPLATE: &str = "alpaca";

/// The task preamble that opens every Alpaca prompt.
pub const PREAMBLE: &str = "Below is an instruction that describes a task. Write a response that \
                            appropriately completes the request.";

/// The header before each instruction.
pub const INSTRUCTION_HEADER: &str = "\n\n### Instruction:\n";

/// The header before an input that goes with the instruction.
pub const INPUT_HEADER: &str = "\n\n### Input:\n";

/// The header that separates the prompt from the response.
pub const RESPONSE_HEADER: &str = "\n\n### Response:\n";

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// A prompt format for conversations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// Chapter 7's Alpaca format: the preamble (or the system message instead), then
    /// `### Instruction:` for each user turn and `### Response:` for each answer.
    Alpaca,
    /// The fallback for a model without a recorded template: the system message, then
    /// `User: …` and `Assistant: …` lines, ending with `Assistant:`.
    Plain,
}

impl ChatTemplate {
    /// The template a checkpoint recorded (`prompt_template`); `Plain` for none or an
    /// unknown one.
    pub fn from_recorded(name: Option<&str>) -> Self {
        match name {
            Some(PROMPT_TEMPLATE) => ChatTemplate::Alpaca,
            _ => ChatTemplate::Plain,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::Alpaca => PROMPT_TEMPLATE,
            ChatTemplate::Plain => "plain",
        }
    }

    /// The prompt for `messages`, ending where the assistant's next answer begins.
    pub fn render(self, messages: &[Message]) -> String {
        let system: Vec<&str> = (messages.iter())
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let turns = messages.iter().filter(|m| m.role != Role::System);
        let mut s = String::new();
        match self {
            ChatTemplate::Alpaca => {
                s.push_str(match system.is_empty() {
                    true => PREAMBLE,
                    false => "",
                });
                s.push_str(&system.join("\n"));
                for m in turns {
                    let header = match m.role {
                        Role::Assistant => RESPONSE_HEADER,
                        _ => INSTRUCTION_HEADER,
                    };
                    s.push_str(header);
                    s.push_str(&m.content);
                }
                s.push_str(RESPONSE_HEADER);
            }
            ChatTemplate::Plain => {
                for line in system {
                    s.push_str(line);
                    s.push_str("\n\n");
                }
                for m in turns {
                    let who = match m.role {
                        Role::Assistant => "Assistant",
                        _ => "User",
                    };
                    s.push_str(&format!("{who}: {}\n", m.content));
                }
                s.push_str("Assistant:");
            }
        }
        s
    }

    /// Text that ends an answer: the start of the next turn.
    pub fn stop(self) -> Vec<String> {
        match self {
            ChatTemplate::Alpaca => vec!["\n\n### ".into()],
            ChatTemplate::Plain => vec!["\nUser:".into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_alternate_and_end_on_the_answer_header() {
        let chat = [
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello."),
            Message::new(Role::User, "Bye"),
        ];
        assert_eq!(
            ChatTemplate::Alpaca.render(&chat),
            "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello.\n\n### Instruction:\nBye\n\n### Response:\n"
        );
        assert_eq!(
            ChatTemplate::Plain.render(&chat),
            "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
        );
        assert_eq!(
            ChatTemplate::from_recorded(Some("alpaca")),
            ChatTemplate::Alpaca
        );
        assert_eq!(ChatTemplate::from_recorded(None), ChatTemplate::Plain);
    }
}
