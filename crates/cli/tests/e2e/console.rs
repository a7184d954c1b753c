//! The web console in a real browser: headless Chromium driven through WebDriver
//! (chromedriver) against `userimport dev`'s in-process stack with its local people (two
//! administrators and a reader, each with their own token). Every page visited is saved as a
//! screenshot under `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::stack::{DirectorySource, LocalTokens, Ports, Stack, StackAuth, StackOptions, Storage};
use fantoccini::{Client, ClientBuilder, Locator};
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use secrecy::ExposeSecret as _;
use service_runtime::auth::{AuthedChannel, Outbound, TokenSource};

/// One browser at a time: two cores do not run several Chromiums and a stack well.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Console {
    stack: Stack,
    url: String,
    browser: Client,
    _driver: Driver,
    admin: Outbound,
    /// import-worker's token, which must not sign anyone in to the console.
    service_token: secrecy::SecretString,
    _data: tempfile::TempDir,
    _one: tokio::sync::MutexGuard<'static, ()>,
}

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port and a headless Chromium session through it.
async fn launch(chromedriver: &str) -> (Client, Driver) {
    let port = free_port();
    let driver = Driver(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let capabilities: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // Background networking off: this machine's closed network refuses
                // Chromium's own connections.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         "--window-size=1366,900"]
            }
        }))
        .unwrap();
    let started = Instant::now();
    let browser = loop {
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        match builder
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "chromedriver did not start a browser: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    (browser, driver)
}

/// The chromedriver of this machine; `None` (the test skips) where there is none, except in CI.
fn chromedriver() -> Option<&'static str> {
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs the browser tests: install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!("skipped: no chromedriver (apt-get install chromium chromium-driver)");
    }
    found
}

/// Clicks what `css` finds once it is there (20 s at most).
async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The text of what `css` finds once it is there, read again when the page changed between
/// finding and reading.
async fn text(browser: &Client, css: &str) -> String {
    let started = Instant::now();
    loop {
        let found = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        match found.text().await {
            Ok(text) => return text,
            Err(error) if started.elapsed() < Duration::from_secs(20) => {
                eprintln!("reading {css} again: {error}");
            }
            Err(error) => panic!("cannot read {css}: {error}"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Console {
    /// A stack of `users` emulated users (synced once), its console, and a signed-out browser;
    /// `None` (skipped) where chromedriver is missing outside CI.
    async fn start(users: usize, chunk_size: u32) -> Option<Self> {
        let chromedriver = chromedriver()?;
        let one = ONE_BROWSER.lock().await;
        let data = tempfile::tempdir().unwrap();
        let tokens = LocalTokens::generate().unwrap();
        let admin_token = tokens.admin.clone();
        let service_token = tokens.import_worker.clone();
        let stack = Stack::start(StackOptions {
            storage: Storage::Sqlite(data.path().to_owned()),
            directory: DirectorySource::Emulator { users },
            ports: Ports::ANY,
            companies: vec![("USMF".into(), "Contoso USA".into())],
            chunk_size,
            auth: StackAuth::Local(tokens),
            auto_import: false,
            sync_groups: Vec::new(),
            delta_interval_secs: 0,
            console: Some(0),
        })
        .await
        .unwrap();
        stack
            .directory
            .sync_now(directory_sync::domain::SyncMode::Full, false)
            .await
            .unwrap();
        let url = stack.console_url.clone().unwrap();

        let (browser, driver) = launch(chromedriver).await;
        let admin = Outbound::new(&TokenSource::inline(admin_token)).unwrap();
        Some(Self {
            stack,
            url,
            browser,
            _driver: driver,
            admin,
            service_token,
            _data: data,
            _one: one,
        })
    }

    /// A channel to `url` with the administrator's token.
    fn as_admin(&self, url: &str) -> AuthedChannel {
        tonic::service::interceptor::InterceptedService::new(
            tonic::transport::Endpoint::from_shared(url.to_owned())
                .unwrap()
                .connect_lazy(),
            self.admin.clone(),
        )
    }

    fn registry(&self) -> RegistryServiceClient<AuthedChannel> {
        RegistryServiceClient::new(self.as_admin(&self.stack.registry_url))
    }

    fn importer(&self) -> ImporterServiceClient<AuthedChannel> {
        ImporterServiceClient::new(self.as_admin(&self.stack.importer_url))
    }

    async fn registry_users(&self) -> Vec<registry_pb::RegistryUser> {
        self.registry()
            .list_users(registry_pb::ListUsersRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .users
    }

    async fn open(&self, path: &str) {
        self.browser
            .goto(&format!("{}{path}", self.url))
            .await
            .unwrap();
    }

    async fn sign_in(&self, who: &str) {
        self.open("/sign-in").await;
        self.shot("sign-in").await;
        self.click_to_load(&format!("#sign-in-{who}")).await;
        self.wait_for_path("/import").await;
    }

    async fn click(&self, css: &str) {
        click(&self.browser, css).await;
    }

    /// Clicks what submits a form or follows a link, and waits for the page it loads.
    async fn click_to_load(&self, css: &str) {
        self.js("window.beforeClick = true; return null;").await;
        self.click(css).await;
        self.until(
            &format!("the page after clicking {css}"),
            "return window.beforeClick !== true && document.readyState === 'complete';",
            Duration::from_secs(30),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        text(&self.browser, css).await
    }

    async fn exists(&self, css: &str) -> bool {
        !self
            .browser
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    async fn path(&self) -> String {
        self.browser.current_url().await.unwrap().path().to_owned()
    }

    async fn wait_for_path(&self, prefix: &str) {
        let started = Instant::now();
        while !self.path().await.starts_with(prefix) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "still on {} instead of {prefix}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` (a function body) in the page; answers what it returns.
    async fn js(&self, script: &str) -> serde_json::Value {
        self.browser.execute(script, Vec::new()).await.unwrap()
    }

    /// Waits until `script` returns true in the page.
    async fn until(&self, what: &str, script: &str, within: Duration) {
        let started = Instant::now();
        while self.js(script).await != serde_json::Value::Bool(true) {
            assert!(
                started.elapsed() < within,
                "{what} did not happen within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Saves what the browser shows (a test artifact).
    async fn shot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.browser.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn stop(self) {
        self.browser.close().await.unwrap();
        self.stack.stop().await.unwrap();
    }
}

fn counts_script(id: &str) -> String {
    format!(
        "return document.getElementById('{id}') ? document.getElementById('{id}').textContent : null;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_three_ticked_users_creates_two_skips_the_guest_without_mail_with_its_reason_and_a_second_import_finds_them_present()
 {
    let Some(console) = Console::start(300, 50).await else {
        return;
    };
    let tenant = console.stack.emulator.as_ref().unwrap().users();
    let guest = tenant
        .iter()
        .find(|u| u.user_type == "Guest" && u.mail.is_none())
        .expect("the tenant has a guest without mail");
    let search = guest.display_name.clone();
    let others: Vec<_> = tenant
        .iter()
        .filter(|u| {
            u.id != guest.id && u.display_name == search && u.mail.is_some() && u.account_enabled
        })
        .take(2)
        .collect();
    assert_eq!(others.len(), 2, "two importable namesakes of {search}");
    let picked = [&guest.id, &others[0].id, &others[1].id];

    console.sign_in("admin").await;
    console.shot("import-users").await;
    // Search as you type: the list narrows without a page load.
    console.js("window.notReloaded = true; return null;").await;
    let field = console.browser.find(Locator::Css("#search")).await.unwrap();
    field.send_keys(&search).await.unwrap();
    let narrowed = format!(
        "const names = [...document.querySelectorAll('#results tbody label')].map(l => l.textContent);\n\
         return names.length > 0 && names.length < 50 && names.every(n => n.startsWith({search:?})) \
         && document.querySelector('input[value={guest:?}]') !== null;",
        guest = guest.id
    );
    console
        .until(
            "the list narrowing to the search",
            &narrowed,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        console.js("return window.notReloaded === true;").await,
        true,
        "no page load"
    );
    for id in picked {
        console
            .click(&format!("input[name=object_id][value='{id}']"))
            .await;
    }
    console.shot("import-users-ticked").await;

    // A second tab ticks the same three and imports them first.
    let first_tab = console.browser.window().await.unwrap();
    let second_tab = console.browser.new_window(true).await.unwrap().handle;
    console.browser.switch_to_window(second_tab).await.unwrap();
    console
        .open(&format!("/import?search={}", search.replace(' ', "+")))
        .await;
    for id in picked {
        console
            .click(&format!("input[name=object_id][value='{id}']"))
            .await;
    }
    console.click_to_load("#import-button").await;
    assert_eq!(console.text("#count-created").await, "2 created");
    assert_eq!(console.text("#count-present").await, "0 already present");
    assert_eq!(console.text("#count-skipped").await, "1 skipped");
    let skipped = console
        .text("#import-result tr[data-outcome='skipped']")
        .await;
    assert!(
        skipped.contains(&guest.user_principal_name) && skipped.contains("without mail"),
        "the skipped row names the guest and why: {skipped}"
    );
    console.shot("import-result").await;
    let users = console.registry_users().await;
    assert_eq!(users.len(), 2, "{users:?}");

    // The first tab still shows them ticked; importing again finds them present.
    console.browser.switch_to_window(first_tab).await.unwrap();
    console.click_to_load("#import-button").await;
    assert_eq!(console.text("#count-created").await, "0 created");
    assert_eq!(console.text("#count-present").await, "2 already present");
    assert_eq!(console.text("#count-skipped").await, "1 skipped");
    assert_eq!(
        console.registry_users().await.len(),
        2,
        "nothing duplicated"
    );
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_batch_import_with_a_monitoring_category_fills_its_progress_bar_to_100_percent_without_a_reload()
 {
    // Chunks of 5 users: the job takes long enough for its page to watch it move.
    let Some(console) = Console::start(3000, 5).await else {
        return;
    };
    console.sign_in("admin").await;
    console.open("/batch").await;
    console.shot("batch-import").await;
    console.click("#critical").await;
    console
        .browser
        .find(Locator::Css("#monitoring-category"))
        .await
        .unwrap()
        .send_keys("nightly-hr")
        .await
        .unwrap();
    console.click_to_load("#start-batch").await;
    console.wait_for_path("/jobs/").await;
    console.js("window.notReloaded = true; return null;").await;
    assert_eq!(
        console
            .js("return document.querySelector('section.progress').hasAttribute('data-events');")
            .await,
        true,
        "the job was still going when its page loaded (it follows the job's events)"
    );
    console
        .until(
            "the progress bar reaching 100%",
            "return document.getElementById('job-progress').value === 100 \
             && document.getElementById('job-status').textContent === 'completed';",
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(
        console.js("return window.notReloaded === true;").await,
        true,
        "no reload"
    );
    assert_eq!(
        console.js(&counts_script("job-percent")).await,
        serde_json::json!("100%")
    );
    console.shot("job").await;
    let facts = console.text("dl.facts").await;
    assert!(
        facts.contains("critical") && facts.contains("category nightly-hr"),
        "{facts}"
    );
    let created: usize = console.text("#job-created").await.parse().unwrap();
    assert!(created > 2000, "{created}");
    let job_id = console.path().await.trim_start_matches("/jobs/").to_owned();
    let job = console
        .importer()
        .get_job(proto::importer::v1::GetJobRequest { job_id })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let options = job.options.unwrap();
    assert!(
        options.critical && options.monitoring_category == "nightly-hr",
        "{options:?}"
    );
    assert_eq!(job.counts.unwrap().created as usize, created);
    console.open("/jobs").await;
    console.shot("jobs").await;
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigning_a_role_on_the_users_page_takes_the_user_off_the_without_roles_list() {
    let Some(console) = Console::start(60, 50).await else {
        return;
    };
    let tenant = console.stack.emulator.as_ref().unwrap().users();
    let member = tenant
        .iter()
        .find(|u| u.user_type == "Member" && u.account_enabled && u.mail.is_some())
        .unwrap();
    let mut importer = console.importer();
    let imported = importer
        .import_selected(proto::importer::v1::ImportSelectedRequest {
            object_ids: vec![member.id.clone()],
            company: "DAT".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let user_id = imported.outcomes[0].user_id.clone();
    assert!(!user_id.is_empty(), "{imported:?}");

    console.sign_in("admin").await;
    console.open("/users?without_roles=1").await;
    console.shot("users").await;
    let link = format!("#users a[href='/users/{user_id}']");
    assert!(console.exists(&link).await, "listed without roles");
    console.click_to_load(&link).await;
    console.wait_for_path(&format!("/users/{user_id}")).await;
    console
        .browser
        .find(Locator::Css("#assign-role"))
        .await
        .unwrap()
        .select_by_value("ACCOUNTANT")
        .await
        .unwrap();
    console.click_to_load("#assign-button").await;
    let roles = console.text("#roles tbody").await;
    assert!(
        roles.contains("ACCOUNTANT") && roles.contains("DAT"),
        "{roles}"
    );
    console.shot("user").await;
    console.open("/users?without_roles=1").await;
    assert!(!console.exists(&link).await, "no longer without roles");
    console.open("/rules").await;
    console.shot("rules").await;
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_halted_by_the_disable_limit_is_approved_in_the_console_and_then_applied() {
    let Some(console) = Console::start(40, 50).await else {
        return;
    };
    let emulator = console.stack.emulator.as_ref().unwrap();
    let members: Vec<_> = emulator
        .users()
        .into_iter()
        .filter(|u| u.user_type == "Member" && u.account_enabled && u.mail.is_some())
        .take(20)
        .collect();
    let mut importer = console.importer();
    importer
        .import_selected(proto::importer::v1::ImportSelectedRequest {
            object_ids: members.iter().map(|u| u.id.clone()).collect(),
            company: "DAT".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A quarter of the imported users disabled at once: over the 10 % limit, so the round halts.
    for user in &members[..5] {
        emulator
            .update_user(
                &user.id,
                graph_emulator::UserUpdate {
                    account_enabled: Some(false),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    console.sign_in("admin").await;
    console.open("/sync").await;
    console.shot("sync").await;
    console
        .browser
        .find(Locator::Css("#mode"))
        .await
        .unwrap()
        .select_by_value("delta")
        .await
        .unwrap();
    console.click_to_load("#run-round").await;
    console.wait_for_path("/sync/runs/").await;
    let run_page = console.browser.current_url().await.unwrap();
    let started = Instant::now();
    while console.text("#run-status").await != "awaiting approval" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the round halted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        console.browser.goto(run_page.as_str()).await.unwrap();
    }
    let reason = console.text("#run-reason").await;
    assert!(reason.contains("would disable 5 of"), "{reason}");
    // The preview lists what approving writes.
    assert_eq!(console.text("#would-disable").await, "5");
    console.shot("sync-round-halted").await;
    assert!(
        console.registry_users().await.iter().all(|u| u.enabled),
        "nothing applied before approval"
    );
    console.click_to_load("#approve-round").await;
    let started = Instant::now();
    while console.text("#run-status").await != "succeeded" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the approved round applied"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        console.browser.goto(run_page.as_str()).await.unwrap();
    }
    let disabled = console
        .registry_users()
        .await
        .into_iter()
        .filter(|u| !u.enabled)
        .count();
    assert_eq!(disabled, 5);
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_token_signs_nobody_in_and_a_reader_sees_no_write_controls_and_a_forged_post_is_refused()
 {
    let Some(console) = Console::start(60, 50).await else {
        return;
    };
    // A service's token signs nobody in.
    console.open("/sign-in").await;
    console
        .browser
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(console.service_token.expose_secret())
        .await
        .unwrap();
    console
        .click_to_load("form[action='/sign-in'] button")
        .await;
    let refused = console.text("main").await;
    assert!(refused.contains("not a person"), "{refused}");
    let someone = console.stack.emulator.as_ref().unwrap().users()[0]
        .id
        .clone();
    console.sign_in("reader").await;
    assert!(
        console
            .text("header .who")
            .await
            .contains("reader (reader)")
    );
    assert!(
        console.exists("input[name=object_id]").await,
        "the reader sees the list"
    );
    assert!(
        !console.exists("#import-button").await,
        "but no Import users button"
    );
    console.shot("import-users-reader").await;
    console.open("/batch").await;
    assert!(!console.exists("#start-batch").await);
    console.open("/sync").await;
    assert!(!console.exists("#run-round").await);
    console.open("/rules").await;
    assert!(!console.exists("#add-rule").await);
    // The reader's own session and CSRF token, posted by hand.
    let forged = format!(
        "const csrf = document.querySelector('input[name=csrf]').value;\n\
         const done = arguments[arguments.length - 1];\n\
         Promise.all([\n\
           fetch('/import', {{method: 'POST', body: new URLSearchParams({{csrf, company: 'DAT', object_id: {someone:?}}})}}),\n\
           fetch('/batch', {{method: 'POST', body: new URLSearchParams({{csrf, company: 'DAT', scope: 'all', batch_processing: '1'}})}}),\n\
         ]).then(rs => done(rs.map(r => r.status)));"
    );
    let statuses = console
        .browser
        .execute_async(&forged, Vec::new())
        .await
        .unwrap();
    assert_eq!(statuses, serde_json::json!([403, 403]));
    assert!(
        console.registry_users().await.is_empty(),
        "nothing imported"
    );
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_posted_without_its_csrf_token_is_refused_and_imports_nothing() {
    let Some(console) = Console::start(60, 50).await else {
        return;
    };
    console.sign_in("admin").await;
    console.click("input[name=object_id]").await;
    console
        .js("document.querySelectorAll('#import-form input[name=csrf]').forEach(e => e.remove()); return null;")
        .await;
    console.click_to_load("#import-button").await;
    let refused = console.text("main").await;
    assert!(
        refused.contains("Forbidden") && refused.contains("CSRF"),
        "{refused}"
    );
    console.shot("csrf-refused").await;
    assert!(
        console.registry_users().await.is_empty(),
        "nothing imported"
    );
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_with_the_organization_account_calls_the_services_as_that_person() {
    use crate::auth::{identity_provider, oidc_config, spec, stack_trusting};
    let Some(chromedriver) = chromedriver() else {
        return;
    };
    let _one = ONE_BROWSER.lock().await;
    let idp = identity_provider().await;
    let (stack, dir) = stack_trusting(&idp, 30).await;
    stack
        .directory
        .sync_now(directory_sync::domain::SyncMode::Full, false)
        .await
        .unwrap();
    // The console, signing people in at the provider the services trust.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = admin_console::Config::local(
        &stack.directory_url,
        &stack.registry_url,
        &stack.importer_url,
    )
    .unwrap();
    config.auth = oidc_config(&idp, None);
    config.sign_in.oidc = Some(admin_console::config::OidcSignIn {
        issuer: idp.issuer(),
        client_id: "userimport-console".into(),
        client_secret: None,
        redirect_url: format!("{url}/sign-in/callback"),
        scopes: vec![format!("{}/.default", crate::auth::AUDIENCE)],
        allow_http_loopback: true,
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let console = admin_console::App::build(config, listener).await.unwrap();
    tokio::spawn(console.run(shutdown.clone()));
    let (browser, _driver) = launch(chromedriver).await;

    idp.sign_in_as(Some(spec(
        "megan@contoso.com",
        &[service_runtime::auth::ADMIN],
    )));
    browser.goto(&format!("{url}/import")).await.unwrap();
    click(&browser, "#sign-in-oidc").await;
    let who = text(&browser, "header .who span").await;
    assert_eq!(who, "megan@contoso.com (administrator)");
    assert_eq!(browser.current_url().await.unwrap().path(), "/import");
    // An import from the console is the person's own: the registry audits them as its actor.
    click(&browser, "input[name=object_id]").await;
    click(&browser, "#import-button").await;
    // The result panel is shown once the import answered.
    text(&browser, "#import-result").await;
    let checker = idp
        .sign_access_token(&spec("checker", &[service_runtime::auth::ADMIN]))
        .unwrap();
    let mut request = tonic::Request::new(registry_pb::ListAuditEventsRequest {
        page_size: 100,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {checker}").parse().unwrap(),
    );
    let events = RegistryServiceClient::connect(stack.registry_url.clone())
        .await
        .unwrap()
        .list_audit_events(request)
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events.iter().any(|e| e.actor == "megan@contoso.com"),
        "the import is audited as the person: {events:?}"
    );

    // Signed out, and the provider refusing: back on the sign-in page, saying why.
    click(&browser, "header .who button").await;
    idp.sign_in_as(None);
    click(&browser, "#sign-in-oidc").await;
    let refused = text(&browser, "p.error").await;
    assert!(refused.contains("access_denied"), "{refused}");
    browser.close().await.unwrap();
    shutdown.cancel();
    stack.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
