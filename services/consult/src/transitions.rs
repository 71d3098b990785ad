//! Which command a consultation in which state accepts: a pure table, tested without a store.

use hub_policies::ConsultState;

/// What is asked of a consultation after its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Schedule,
    Reschedule,
    Accept,
    Decline,
    Cancel,
    Complete,
    Approve,
}

impl Command {
    pub const ALL: [Command; 7] = [
        Command::Schedule,
        Command::Reschedule,
        Command::Accept,
        Command::Decline,
        Command::Cancel,
        Command::Complete,
        Command::Approve,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Schedule => "schedule",
            Command::Reschedule => "reschedule",
            Command::Accept => "accept",
            Command::Decline => "decline",
            Command::Cancel => "cancel",
            Command::Complete => "complete",
            Command::Approve => "approve",
        }
    }
}

/// The state a command leads to from `from`, or `None` when `from` refuses it.
pub fn next(from: ConsultState, command: Command) -> Option<ConsultState> {
    use ConsultState::*;
    match (command, from) {
        (Command::Schedule, Requested) => Some(Scheduled),
        // A moved slot keeps its acceptance: the expert agreed to the consultation, and the new
        // slot was checked against their calendar.
        (Command::Reschedule, Scheduled | Accepted) => Some(from),
        (Command::Accept, Scheduled) => Some(Accepted),
        (Command::Decline, Requested | Scheduled) => Some(Declined),
        (Command::Cancel, Requested | Scheduled | Accepted) => Some(Cancelled),
        (Command::Complete, Accepted) => Some(Completed),
        // The owner's approval opens the window; it changes no state.
        (Command::Approve, Requested | Scheduled | Accepted) => Some(from),
        _ => None,
    }
}

/// The refusal of `command` in state `from`, naming the state and what it accepts.
pub fn refusal(consult: &uuid::Uuid, from: ConsultState, command: Command) -> String {
    let allowed: Vec<&str> = Command::ALL
        .into_iter()
        .filter(|c| next(from, *c).is_some())
        .map(|c| c.as_str())
        .collect();
    format!(
        "consultation {consult} is {from}: it cannot {} (a {from} consultation accepts: {})",
        command.as_str(),
        if allowed.is_empty() {
            "nothing, it is closed".to_owned()
        } else {
            allowed.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsultState::*;

    const STATES: [ConsultState; 6] = [
        Requested, Scheduled, Accepted, Declined, Cancelled, Completed,
    ];

    #[test]
    fn closed_consultations_refuse_every_command() {
        for state in [Declined, Cancelled, Completed] {
            for command in Command::ALL {
                assert_eq!(next(state, command), None, "{state} {command:?}");
            }
        }
    }

    #[test]
    fn every_illegal_transition_is_refused_with_the_current_state() {
        let legal = [
            (Requested, Command::Schedule),
            (Requested, Command::Decline),
            (Requested, Command::Cancel),
            (Requested, Command::Approve),
            (Scheduled, Command::Reschedule),
            (Scheduled, Command::Accept),
            (Scheduled, Command::Decline),
            (Scheduled, Command::Cancel),
            (Scheduled, Command::Approve),
            (Accepted, Command::Reschedule),
            (Accepted, Command::Cancel),
            (Accepted, Command::Complete),
            (Accepted, Command::Approve),
        ];
        let id = uuid::Uuid::nil();
        for state in STATES {
            for command in Command::ALL {
                let allowed = legal.contains(&(state, command));
                assert_eq!(
                    next(state, command).is_some(),
                    allowed,
                    "{state} {command:?}"
                );
                if !allowed {
                    let message = refusal(&id, state, command);
                    assert!(message.contains(&format!("is {state}")), "{message}");
                    assert!(message.contains(command.as_str()), "{message}");
                }
            }
        }
    }
}
