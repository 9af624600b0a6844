//! ganglion's check logic, as a pure library.
//!
//! This crate owns the Nagios semantics ganglion's checks engine runs on: threshold ranges,
//! plugin output and performance data, the soft/hard state machine, flap detection,
//! acknowledgements, scheduled downtime, external command lines and the NSCA 2.x codec. Every
//! function takes its inputs and `now` and returns results or transitions.
//!
//! It does not own sockets, timers, processes or storage: the collector schedules checks,
//! runs plugins, accepts NSCA connections, persists [`state::Status`] values and sends
//! notifications, calling into this crate for every decision.
//!
//! # Layout
//! - [`ack`]: acknowledgements, normal and sticky, and when they are cleared.
//! - [`command`]: Nagios external command lines (`PROCESS_SERVICE_CHECK_RESULT`, acks, downtimes).
//! - [`downtime`]: fixed/flexible/triggered downtime, one-off or recurring (cron), start/end events.
//! - [`flap`]: Nagios flap detection (21-state history, weighted percent change, hysteresis).
//! - [`nsca`]: NSCA 2.x server-side codec: init packet, ciphers, data-packet decoder.
//! - [`plugin`]: exit codes, output split (first line, long output, perfdata), perfdata grammar.
//! - [`range`]: Nagios threshold ranges and warning/critical evaluation.
//! - [`state`]: service and host states, the soft/hard state machine, reachability, freshness.
//!
//! Where Nagios is known to be wrong, or measured behaviour and documentation disagree, the module docs say
//! what is done instead and why (stale passive services, `~:N`, range junk, triggered
//! downtime, the `;` → `:` output rewrite, ack `sticky=1`).
//!
//! # Example
//! A metric check evaluated against ranges, driving the soft/hard state machine:
//! ```
//! use ganglion_checks::range::Thresholds;
//! use ganglion_checks::state::{ResultContext, ServiceState, ServiceStatus, StateSettings, StateType};
//!
//! let thresholds = Thresholds::parse(Some("80"), Some("95")).unwrap();
//! let settings = StateSettings { max_check_attempts: 2, check_interval_secs: 60, retry_interval_secs: 10 };
//! let mut status = ServiceStatus::new();
//!
//! let t = status.apply(&settings, thresholds.evaluate(97.0), 1_700_000_000, ResultContext::default());
//! assert_eq!((t.state, t.state_type, t.next_check), (ServiceState::Critical, StateType::Soft, 1_700_000_010));
//! let t = status.apply(&settings, thresholds.evaluate(96.0), 1_700_000_010, ResultContext::default());
//! assert!(t.hard_state_change);
//! ```
//!
//! A plugin's output and a passive result from an NSCA connection:
//! ```
//! use ganglion_checks::nsca::{init_packet, Config, Encoder, Method, Session};
//! use ganglion_checks::plugin::{parse_output, parse_perfdata};
//!
//! let out = parse_output("TCP OK - 0.000 second response time|time=0.000117s;;;0.000000;10.000000\n");
//! assert_eq!(parse_perfdata(&out.perfdata).data[0].max, Some(10.0));
//!
//! let iv = [7u8; 128];
//! let init = init_packet(&iv, 1_700_000_000);
//! let wire = Encoder::new(Method::Rijndael128, b"secret", &init).packet(2, "db01", "MySQL", "CRITICAL - down", false);
//! let config = Config { method: Method::from_code(14).unwrap(), password: b"secret".to_vec(), max_packet_age_secs: 30 };
//! let mut session = Session::new(config, iv, 1_700_000_000);
//! let (packet, _used) = session.decode(&wire, 1_700_000_001).unwrap();
//! assert_eq!((packet.host.as_str(), packet.return_code), ("db01", 2));
//! ```

pub mod ack;
pub mod command;
pub mod downtime;
pub mod flap;
pub mod nsca;
pub mod plugin;
pub mod range;
pub mod state;
