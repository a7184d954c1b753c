//! RabbitMQ administration for tests: a virtual host of a test's own (so closing its
//! connections leaves other tests alone, and its queues go when it ends) and `rabbitmqctl`.

/// A virtual host that is deleted, with everything in it, when dropped.
pub(crate) struct Vhost {
    pub(crate) name: String,
    /// The broker URL pointing at this virtual host.
    pub(crate) url: String,
    _servers: test_support::ServersGuard,
}

impl Vhost {
    /// Creates a fresh virtual host on the broker of `url`, open to `url`'s user.
    pub(crate) async fn create(url: &str) -> Self {
        let servers = test_support::shared_servers().await;
        let name = format!("userimport-test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]).await;
        let vhost = Self {
            url: with_vhost(url, &name),
            name,
            _servers: servers,
        };
        let user = user_of(url);
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user,
            ".*",
            ".*",
            ".*",
        ])
        .await;
        vhost
    }

    /// Closes every client connection to this virtual host, as a broker restart would.
    pub(crate) async fn close_all_connections(&self) {
        let closed = rabbitmqctl(&[
            "close_all_connections",
            "-p",
            &self.name,
            "userimport test: connections dropped",
        ])
        .await;
        assert!(!closed.contains("Closed 0 connections"), "{closed}");
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Runs `rabbitmqctl` and returns its output; fails the test when it fails.
pub(crate) async fn rabbitmqctl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("rabbitmqctl")
            .args(&args)
            .output()
            .expect("rabbitmqctl runs (RabbitMQ tests need it on the PATH)");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    })
    .await
    .unwrap()
}

/// `url` with its virtual host replaced.
fn with_vhost(url: &str, vhost: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (rest, query) = rest
        .split_once('?')
        .map_or((rest, None), |(r, q)| (r, Some(q)));
    let authority = rest.split('/').next().unwrap();
    match query {
        Some(query) => format!("{scheme}://{authority}/{vhost}?{query}"),
        None => format!("{scheme}://{authority}/{vhost}"),
    }
}

/// The user name in `url` (RabbitMQ's default, guest, when it names none).
fn user_of(url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((credentials, _)) => credentials.split(':').next().unwrap_or("guest").to_owned(),
        None => "guest".to_owned(),
    }
}

/// Deliveries not yet acknowledged on the broker connections whose client-given name (shown
/// by the management UI; import-worker names its connections by prefix, role and replica)
/// contains `name`.
pub(crate) async fn unacked_on(name: &str) -> u64 {
    let connections = rabbitmqctl(&["list_connections", "-s", "pid", "client_properties"]).await;
    let pids: Vec<&str> = connections
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split('\t').next())
        .collect();
    let channels = rabbitmqctl(&[
        "list_channels",
        "-s",
        "connection",
        "messages_unacknowledged",
    ])
    .await;
    channels
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let pid = fields.next()?;
            let unacked: u64 = fields.next()?.trim().parse().ok()?;
            pids.contains(&pid).then_some(unacked)
        })
        .sum()
}
