//! What a backend claims: the promises that select which properties of the spec its histories
//! are held to. A property the backend does not claim (FIFO order, fencing, crash safety…) is
//! reported as "not claimed", never judged; a claim such as [`Capabilities::session_bound`]
//! widens what the spec accepts (a lease may end when its holder's session does).

/// What a backend promises. The conformance suite checks every claimed property and
/// reports the unclaimed ones as "not claimed" — never silently.
///
/// The struct is `#[non_exhaustive]` so that new promises can be added; a backend states its
/// own with [`Capabilities::none`] and the `with_*` setters (`lockcheck_impls::Capabilities` is
/// this same type):
///
/// ```
/// use lockcheck_model::spec::Capabilities;
///
/// let claims = Capabilities::none().with_fencing(true).with_server_side_expiry(true).with_session_bound(true);
/// assert!(claims.fencing && claims.session_bound && !claims.fifo);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Fencing tokens strictly increase per key, in grant order.
    pub fencing: bool,
    /// Fencing tokens stay monotonic across a server restart.
    pub fencing_survives_restart: bool,
    /// Waiters are granted in arrival order.
    pub fifo: bool,
    /// Leases expire on the backend itself: a crashed holder's slot frees within its TTL.
    pub server_side_expiry: bool,
    /// Held leases survive a restart of the backend's server.
    pub survives_server_restart: bool,
    /// Permit limits above 1.
    pub semaphores: bool,
    /// Waiters are woken by the backend (no polling delay on hand-off).
    pub push_wakeups: bool,
    /// Leases end with the client's session (its connection; a ZooKeeper or etcd session, a
    /// Postgres backend): when the session ends, the backend frees the client's leases at
    /// once, before their TTL. A crashed holder's early release is then correct; a *live*
    /// holder whose session is cut loses its lease while it still believes it holds it, which
    /// only fencing makes safe.
    pub session_bound: bool,
    /// Leases are timed by a monotonic clock: a step or a skew of the server's wall clock
    /// (an NTP step, a VM resumed with a stale clock, a fast-running realtime clock) does not
    /// end them. A TTL lock whose expiry reads the wall clock (Redis `PX`, JetStream message
    /// ages) loses a held lease when the server's clock jumps forward, and another client is
    /// granted it — the case of Kleppmann's Redlock critique (2016). A monotonic clock does
    /// not defend against an oscillator that runs fast, which moves both clocks alike.
    pub expiry_by_monotonic_clock: bool,
    /// Leases have no TTL: the TTL asked for is ignored, and a lease is held until it is
    /// released (or, where leases are [session-bound](Capabilities::session_bound), until its
    /// holder's session ends). A ZooKeeper lock recipe, a Postgres advisory lock. The checks
    /// that wait out a TTL are then not claimed, and histories are judged with leases that
    /// never expire. (A claim that takes a promise away: a backend that says nothing keeps its
    /// TTLs.)
    pub no_ttl: bool,
}

macro_rules! capability_setters {
    ($($(#[$doc:meta])* $setter:ident => $field:ident;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub const fn $setter(mut self, claimed: bool) -> Self {
            self.$field = claimed;
            self
        }
    )*};
}

impl Capabilities {
    /// No promise at all: the starting point for a backend's own claims.
    pub const fn none() -> Self {
        Capabilities {
            fencing: false,
            fencing_survives_restart: false,
            fifo: false,
            server_side_expiry: false,
            survives_server_restart: false,
            semaphores: false,
            push_wakeups: false,
            session_bound: false,
            expiry_by_monotonic_clock: false,
            no_ttl: false,
        }
    }

    /// Everything a correct single-process locker offers (the memory locker's claims).
    pub const fn all_in_process() -> Self {
        Capabilities {
            fencing: true,
            fencing_survives_restart: false,
            fifo: true,
            server_side_expiry: true,
            survives_server_restart: false,
            semaphores: true,
            push_wakeups: true,
            session_bound: false,
            expiry_by_monotonic_clock: true,
            no_ttl: false,
        }
    }

    capability_setters! {
        /// Claims (or not) [`Capabilities::fencing`].
        with_fencing => fencing;
        /// Claims (or not) [`Capabilities::fencing_survives_restart`].
        with_fencing_survives_restart => fencing_survives_restart;
        /// Claims (or not) [`Capabilities::fifo`].
        with_fifo => fifo;
        /// Claims (or not) [`Capabilities::server_side_expiry`].
        with_server_side_expiry => server_side_expiry;
        /// Claims (or not) [`Capabilities::survives_server_restart`].
        with_survives_server_restart => survives_server_restart;
        /// Claims (or not) [`Capabilities::semaphores`].
        with_semaphores => semaphores;
        /// Claims (or not) [`Capabilities::push_wakeups`].
        with_push_wakeups => push_wakeups;
        /// Claims (or not) [`Capabilities::session_bound`].
        with_session_bound => session_bound;
        /// Claims (or not) [`Capabilities::expiry_by_monotonic_clock`].
        with_expiry_by_monotonic_clock => expiry_by_monotonic_clock;
        /// Claims (or not) [`Capabilities::no_ttl`].
        with_no_ttl => no_ttl;
    }
}
