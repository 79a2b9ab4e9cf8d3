//! The simulator's answers: deterministic, and useful enough for a demo.

/// (keywords, answer): the first entry with a keyword in the question wins.
const FAQ: &[(&[&str], &str)] = &[
    (
        &["ship", "delivery", "deliver", "track"],
        "Orders ship within 1–2 business days. You'll get a tracking link by email as soon as your parcel leaves our warehouse.",
    ),
    (
        &["refund", "return", "money back"],
        "You can return any item within 30 days for a full refund. Start a return from your order page; the refund reaches you 3–5 days after we receive the parcel.",
    ),
    (
        &["hours", "open", "opening"],
        "Our support team is available Monday to Friday, 9:00 to 17:00 CET. This assistant answers around the clock.",
    ),
    (
        &["password", "log in", "login", "sign in"],
        "To reset your password, choose “Forgot password” on the sign-in page and follow the link we email you. The link is valid for one hour.",
    ),
    (
        &["price", "cost", "pricing", "plan"],
        "Our plans start at €9 per month, billed monthly; annual billing saves two months.",
    ),
    (
        &["hello", "hi ", "hey", "good morning", "good afternoon"],
        "Hello! I'm the Helpline demo assistant. Ask me about shipping, returns, opening hours, passwords or pricing.",
    ),
];

/// Whether the customer asks for a person (the simulator then calls the
/// `handoff_to_human` tool, as a model would).
pub fn wants_a_person(messages: &[String]) -> bool {
    let text = messages.join(" ").to_lowercase();
    [
        "human",
        "a person",
        "real person",
        "an agent",
        "someone real",
        "speak to someone",
    ]
    .iter()
    .any(|k| text.contains(k))
}

/// The answer to the customer messages of one turn.
pub fn answer(messages: &[String]) -> String {
    let question = messages.join("\n");
    let lower = format!("{} ", question.to_lowercase());
    if let Some((_, answer)) = FAQ
        .iter()
        .find(|(keys, _)| keys.iter().any(|k| lower.contains(k)))
    {
        return (*answer).to_owned();
    }
    let quoted = messages
        .iter()
        .map(|m| format!("“{}”", m.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "You said {quoted}. I'm the demo assistant: I know about shipping, returns, opening hours, \
         passwords and pricing. Set OPENAI_API_KEY to talk to a real model."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_questions_get_the_faq_answer() {
        assert!(answer(&["When will my order ship?".into()]).starts_with("Orders ship"));
        assert!(answer(&["I want a refund".into()]).contains("30 days"));
        assert!(answer(&["hi".into()]).starts_with("Hello!"));
    }

    #[test]
    fn other_questions_are_echoed_whole() {
        let reply = answer(&["first".into(), "second".into()]);
        assert!(reply.starts_with("You said “first”, “second”."), "{reply}");
    }
}
