//! Acknowledgements of problems (research/nagios.md §4.8, §4.10).
//!
//! An acknowledgement suppresses PROBLEM notifications and re-notifications of the object
//! it is on, never its RECOVERY. It can only be placed on an object in a problem state. A
//! **normal** ack is removed by any state change (CRITICAL → WARNING too); a **sticky** ack
//! only by a return to OK/UP. Both go away on recovery, so the recovery is still sent.
//! The collector persists [`Acknowledgement`] values and asks [`Acknowledgement::survives`]
//! after each [`crate::state::Transition`].

use serde::{Deserialize, Serialize};

use crate::state::{CheckState, Timestamp, Transition};

/// Normal or sticky.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckKind {
    /// Removed on any state change.
    Normal,
    /// Removed only when the object returns to OK/UP.
    Sticky,
}

impl AckKind {
    /// The `sticky` field of `ACKNOWLEDGE_*_PROBLEM`. Nagios makes only 2 sticky and Naemon
    /// documents 1; research/nagios.md §4.8 recommends accepting both, so 1 and 2 (and any
    /// larger value) are sticky, 0 or less is normal.
    pub fn from_nagios(sticky: i64) -> AckKind {
        if sticky >= 1 {
            AckKind::Sticky
        } else {
            AckKind::Normal
        }
    }
}

/// An acknowledgement on one service or host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub kind: AckKind,
    /// Who acknowledged.
    pub author: String,
    /// Why; shown with the problem and in the ACKNOWLEDGEMENT notification.
    pub comment: String,
    /// Whether an ACKNOWLEDGEMENT notification is to be sent.
    pub notify: bool,
    /// Keep the comment after the ack is gone (Nagios' `persistent`).
    pub persistent: bool,
    /// When it was placed.
    pub time: Timestamp,
}

/// Why an acknowledgement was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// Nagios ignores an ack on an OK/UP object; so do we, with a reason.
    #[error("cannot acknowledge: the object is {state}, not a problem")]
    NotAProblem { state: String },
}

impl Acknowledgement {
    /// Places an acknowledgement on an object whose current state is `state`.
    ///
    /// # Errors
    /// [`AckError::NotAProblem`] when `state` is OK/UP.
    pub fn place<S: CheckState>(
        state: S,
        kind: AckKind,
        author: &str,
        comment: &str,
        notify: bool,
        persistent: bool,
        now: Timestamp,
    ) -> Result<Acknowledgement, AckError> {
        if state.is_good() {
            return Err(AckError::NotAProblem { state: state.to_string() });
        }
        Ok(Acknowledgement {
            kind,
            author: author.to_owned(),
            comment: comment.to_owned(),
            notify,
            persistent,
            time: now,
        })
    }

    /// Whether the ack is still in force after `transition` (Nagios 4
    /// `handle_async_service_check_result`: normal acks drop on any state change, sticky ones
    /// on OK, and every OK result clears the ack).
    pub fn survives<S: CheckState>(&self, transition: &Transition<S>) -> bool {
        if transition.state.is_good() {
            return false;
        }
        match self.kind {
            AckKind::Normal => !transition.state_change,
            AckKind::Sticky => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ResultContext, ServiceState, ServiceStatus, StateSettings};
    use ServiceState::{Critical, Ok as O, Warning};

    fn hard(s: &mut ServiceStatus, r: ServiceState, now: i64) -> Transition<ServiceState> {
        let set = StateSettings { max_check_attempts: 1, check_interval_secs: 60, retry_interval_secs: 10 };
        s.apply(&set, r, now, ResultContext::default())
    }

    #[test]
    fn cannot_ack_an_ok_object() {
        let e = Acknowledgement::place(O, AckKind::Normal, "me", "x", false, false, 1).unwrap_err();
        assert_eq!(e.to_string(), "cannot acknowledge: the object is OK, not a problem");
        assert!(
            Acknowledgement::place(crate::state::HostState::Down, AckKind::Sticky, "me", "", true, false, 1).is_ok()
        );
    }

    /// research/nagios.md §4.8 run on `ackme`: normal ack kept over CRITICAL, dropped by
    /// WARNING; sticky ack kept over CRITICAL, dropped by OK (and the RECOVERY is sent).
    #[test]
    fn reproduces_the_measured_ack_sequence() {
        let mut s = ServiceStatus::new();
        hard(&mut s, Critical, 1);
        let normal =
            Acknowledgement::place(s.state, AckKind::from_nagios(0), "t", "normal ack; with semicolon", true, true, 2)
                .unwrap();
        assert!(normal.survives(&hard(&mut s, Critical, 3)));
        let t = hard(&mut s, Warning, 4);
        assert!(!normal.survives(&t));
        assert_eq!(t.notify, crate::state::Notify::Problem);

        let sticky =
            Acknowledgement::place(s.state, AckKind::from_nagios(2), "t", "sticky ack", true, false, 5).unwrap();
        assert!(sticky.survives(&hard(&mut s, Critical, 6)));
        let t = hard(&mut s, O, 7);
        assert!(!sticky.survives(&t));
        assert_eq!(t.notify, crate::state::Notify::Recovery);
    }

    #[test]
    fn sticky_values() {
        assert_eq!(AckKind::from_nagios(2), AckKind::Sticky);
        assert_eq!(AckKind::from_nagios(1), AckKind::Sticky);
        assert_eq!(AckKind::from_nagios(0), AckKind::Normal);
    }
}
