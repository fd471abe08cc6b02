//! The xen target under real Xen: Debian's Xen 4.17 in QEMU (compose's Xen sandbox,
//! `composer/src/xen_sandbox.rs`), with the images `compose build --target xen` makes and
//! the `.xl` files `compose deploy --format xl` writes.
//!
//! One boot runs every guest in turn (a boot costs tens of seconds under TCG):
//! hello greets and powers off with its status line; the devices guest reads the wall
//! clock and the random device and writes and reads back a disk that dom0 then checks;
//! the same guest asked to panic crashes the domain; echo answers a client in dom0 over
//! `xenbr0` (netfront), then idles without using CPU (it blocks in `SCHEDOP_poll`); the site, its assets on a block device (blkfront), is fetched
//! byte-identical from dom0; echo-token gets its token from the secrets disk, and the
//! token appears in neither the `.xl` nor the command line; site-monitored has two vifs
//! (`xenbr0`, `xenbr1`): dom0 fetches the site on one and `/metrics` on the other, and
//! neither address serves the other's port; site-https, its certificate and key from the
//! secrets disk, is fetched with curl `--cacert` (TLS 1.3 and 1.2) and `openssl s_client`
//! on the service vif and counts its handshakes on the management vif. Xen's boot log must show that
//! a real Xen with hardware-assisted paging ran. A second boot is `compose run --target
//! xen` as a process: an application's exit status reaches its caller.
//!
//! Needs qemu-system-x86_64, apt-get (bookworm lists) and dpkg-deb (`.ci/run`); the
//! sandbox is prepared once in `target/xen-sandbox`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use compose::xen_sandbox::{Guest, Reason, Sandbox};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(args)
        .current_dir(dir)
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .env("COMPOSE_XEN_SANDBOX", sandbox_dir())
        .env("COMPOSE_XEN_SANDBOX_ONLY", "1")
        .output()
        .expect("run compose")
}

fn compose(args: &[&str]) -> Output {
    compose_in(&root(), args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sandbox_dir() -> PathBuf {
    root().join("target/xen-sandbox")
}

fn sandbox() -> Sandbox {
    Sandbox::prepare(&sandbox_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// `compose build SPEC --target xen ARGS`, leaving the result link at `link`.
fn build(spec: &str, args: &[&str], link: &Path) -> PathBuf {
    let mut a = vec!["build", spec, "--target", "xen", "--out-link"];
    let l = link.to_str().unwrap();
    a.push(l);
    a.extend_from_slice(args);
    let o = compose(&a);
    assert!(
        o.status.success(),
        "compose build {spec}: {}",
        text(&o.stderr)
    );
    link.to_path_buf()
}

/// `compose deploy RESULT --format xl ARGS`, as xl lines (comments dropped).
fn deploy(result: &Path, args: &[&str]) -> (String, Vec<String>) {
    let mut a = vec!["deploy", result.to_str().unwrap(), "--format", "xl"];
    a.extend_from_slice(args);
    let o = compose(&a);
    assert!(o.status.success(), "compose deploy: {}", text(&o.stderr));
    let xl = text(&o.stdout);
    let lines = xl
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (xl, lines)
}

/// platforms/xen's devices guest, built as a guest image.
fn devices_guest() -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xen-guest");
    let flags = [
        "-Crelocation-model=static",
        "-Clink-arg=-Tcompose-xen.ld",
        "-Clink-arg=-zmax-page-size=0x1000",
        "-Clink-arg=-znorelro",
        "-Clink-arg=--no-pie",
    ];
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["build", "--release", "-p", "compose-xen-guest"])
        .args(["--features", "examples", "--example", "devices_guest"])
        .args(["--target", "x86_64-unknown-none"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the devices guest failed");
    target_dir.join("x86_64-unknown-none/release/examples/devices_guest")
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A dom0 loop: up to `tries` attempts of `cmd`, half a second apart, until it prints.
fn retry(cmd: &str, tries: u32) -> String {
    format!(
        "i=0; while [ $i -lt {tries} ]; do out=$({cmd} 2>/dev/null); [ -n \"$out\" ] && break; i=$((i+1)); sleep 0.5; done; echo \"$out\""
    )
}

#[test]
fn guests_run_under_real_xen() {
    let tmp = tempfile::tempdir().unwrap();
    let sandbox = sandbox();
    let mut guests = Vec::new();

    // 1. hello: greets twice and powers off.
    let hello = build("specs/hello.kdl", &[], &tmp.path().join("hello"));
    let (_, xl) = deploy(&hello, &["--", "--name=Xen", "--times=2"]);
    assert!(xl.contains(&"type = \"pvh\"".to_string()), "{xl:?}");
    guests.push(Guest {
        image: hello.join("hello.xen"),
        xl,
        ..Guest::default()
    });

    // 2. the devices guest on a disk dom0 makes and checks afterwards.
    let dev = devices_guest();
    let disk_xl = "disk = [ 'format=raw,vdev=xvda,access=rw,target=/job/g2/disk.img' ]";
    guests.push(Guest {
        image: dev.clone(),
        xl: vec![disk_xl.into()],
        pre: Some("dd if=/dev/zero of=/job/g2/disk.img bs=512 count=2048 2>/dev/null".into()),
        post: Some(
            "echo \"tail $(dd if=/job/g2/disk.img bs=512 skip=2046 count=2 2>/dev/null | sha256sum | cut -d' ' -f1)\""
                .into(),
        ),
        ..Guest::default()
    });
    // 3. the same, asked to panic.
    guests.push(Guest {
        image: dev,
        xl: vec![
            disk_xl.replace("/job/g2/", "/job/g3/"),
            "cmdline = \"--panic\"".into(),
        ],
        pre: Some("dd if=/dev/zero of=/job/g3/disk.img bs=512 count=2048 2>/dev/null".into()),
        ..Guest::default()
    });

    // 4. echo over netfront, a client in dom0.
    let echo = build("specs/echo.kdl", &[], &tmp.path().join("echo"));
    let (_, xl) = deploy(
        &echo,
        &["--net", "service=xenbr0", "--", "--ipv4=10.0.0.2/24"],
    );
    guests.push(Guest {
        image: echo.join("echo.xen"),
        xl,
        // Once it answered, it idles: Xen's CPU time of the domain (`xl list`, 0.1 s
        // resolution) over 4 s of waiting must stay well below the 4 s a spin would use.
        hook: Some(format!(
            "echo \"echoed: $({})\"\n\
             d=$1; cpu() {{ xl list $d | awk 'NR==2 {{ print $6 }}'; }}\n\
             a=$(cpu); sleep 4; b=$(cpu); echo \"idle cpu $a $b\"\n\
             xl destroy $1\n",
            retry("printf 'hello xen\\n' | timeout 5 nc 10.0.0.2 7777", 60)
        )),
        ..Guest::default()
    });

    // 5. the site, its assets on a block device, fetched from dom0.
    let site = build(
        "specs/site.kdl",
        &["--arg", "backend=block"],
        &tmp.path().join("site"),
    );
    let public = std::fs::read(site.join("public.img")).unwrap();
    let (_, xl) = deploy(
        &site,
        &[
            "--net",
            "service=xenbr0",
            "--block",
            "public=/job/g5/public.img",
            "--",
            "--ipv4=10.0.0.3/24",
            "--port=80",
        ],
    );
    let files = ["index.html", "style.css", "logo.png"];
    let mut hook = String::new();
    for (i, f) in files.iter().enumerate() {
        let fetch = format!("wget -q -O - http://10.0.0.3/{f} | sha256sum | cut -d' ' -f1");
        // The first fetch waits for the guest to come up.
        let tries = if i == 0 { 60 } else { 4 };
        hook.push_str(&format!("echo \"{f} $({})\"\n", retry(&fetch, tries)));
    }
    hook.push_str("xl destroy $1\n");
    guests.push(Guest {
        image: site.join("site.xen"),
        xl,
        files: vec![("public.img".into(), public)],
        hook: Some(hook),
        ..Guest::default()
    });

    // 6. echo-token: the token from the secrets disk.
    let token = "xen-s3cret-7f1d";
    let et = build("specs/echo-token.kdl", &[], &tmp.path().join("echo-token"));
    let (xl_text, xl) = deploy(
        &et,
        &[
            "--net",
            "service=xenbr0",
            "--block",
            "secrets=/job/g6/secrets.img",
            "--",
            "--ipv4=10.0.0.4/24",
        ],
    );
    assert!(!xl_text.contains(token));
    let secrets = compose::manifest::secrets_block_image(&[("token", token.as_bytes())]).unwrap();
    guests.push(Guest {
        image: et.join("echo-token.xen"),
        xl,
        files: vec![("secrets.img".into(), secrets)],
        hook: Some(format!(
            "echo \"token: $({})\"\necho \"wrong: $(printf 'nope\\nhi\\n' | timeout 5 nc 10.0.0.4 7777)\"\nxl destroy $1\n",
            retry(
                &format!("printf '{token}\\nwith token\\n' | timeout 5 nc 10.0.0.4 7777"),
                60
            ),
        )),
        ..Guest::default()
    });

    // 7. site-monitored on two vifs: the site on `service` (xenbr0), the metrics on
    // `management` (xenbr1), each address serving only its own port.
    let mon = build(
        "specs/site-monitored.kdl",
        &[],
        &tmp.path().join("site-monitored"),
    );
    let (_, xl) = deploy(
        &mon,
        &[
            "--net",
            "service=xenbr0",
            "--net",
            "management=xenbr1",
            "--",
            "--ipv4=10.0.0.5/24",
            "--port=80",
            "--mgmt-ipv4=10.0.1.5/24",
        ],
    );
    assert!(
        xl.iter()
            .any(|l| l == "vif = [ 'bridge=xenbr0', 'bridge=xenbr1' ]"),
        "{xl:?}"
    );
    guests.push(Guest {
        image: mon.join("site.xen"),
        xl,
        hook: Some(format!(
            "{CURL}\n\
             echo \"index $($c $wait http://10.0.0.5/ | sha256sum | cut -d' ' -f1)\"\n\
             echo metrics-begin; $c $wait http://10.0.1.5:9090/metrics; echo metrics-end\n\
             $c -o /dev/null http://10.0.0.5:9090/metrics; echo \"service:9090 rc=$?\"\n\
             $c -o /dev/null http://10.0.1.5/; echo \"management:80 rc=$?\"\n\
             xl destroy $1\n"
        )),
        timeout: Some(120),
        ..Guest::default()
    });

    // 8. site-https on two vifs: curl --cacert over HTTPS (TLS 1.3 and 1.2), the redirect
    // on plain HTTP, the handshakes counted on the management interface. The certificate
    // and key are the secret `tls`, on the secrets disk.
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let o = Command::new("sh")
        .args([
            "-ec",
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
               -keyout ca.key -out ca.pem -days 2 -subj /CN=compose-xen-test-ca 2>/dev/null
             printf 'subjectAltName=IP:10.0.0.6\\nbasicConstraints=CA:FALSE\\n' > ext
             openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out site.key
             openssl req -new -key site.key -out site.csr -subj /CN=10.0.0.6
             openssl x509 -req -in site.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
               -out site.crt -days 2 -extfile ext 2>/dev/null
             cat site.crt site.key > site.pem
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
               -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=another-ca 2>/dev/null",
        ])
        .current_dir(&certs)
        .output()
        .expect("run openssl");
    assert!(o.status.success(), "openssl: {}", text(&o.stderr));
    let pem = std::fs::read(certs.join("site.pem")).unwrap();
    let key = text(&std::fs::read(certs.join("site.key")).unwrap());
    let https = build("specs/site-https.kdl", &[], &tmp.path().join("site-https"));
    let (https_xl_text, xl) = deploy(
        &https,
        &[
            "--net",
            "service=xenbr0",
            "--net",
            "management=xenbr1",
            "--block",
            "secrets=/job/g8/secrets.img",
            "--",
            "--ipv4=10.0.0.6/24",
            "--port=443",
            "--http-port=80",
            "--mgmt-ipv4=10.0.1.6/24",
            "--handshake-timeout=60",
        ],
    );
    let secrets = compose::manifest::secrets_block_image(&[("tls", &pem)]).unwrap();
    let read = |n: &str| std::fs::read(certs.join(n)).unwrap();
    guests.push(Guest {
        image: https.join("site-https.xen"),
        xl,
        files: vec![
            ("secrets.img".into(), secrets),
            ("ca.pem".into(), read("ca.pem")),
            ("other-ca.pem".into(), read("other-ca.pem")),
        ],
        hook: Some(format!(
            "{CURL}\n\
             ca=/job/g8/ca.pem\n\
             command -v curl >/dev/null || echo 'no curl in dom0'\n\
             echo \"https $($c $wait --cacert $ca https://10.0.0.6/ | sha256sum | cut -d' ' -f1)\"\n\
             echo \"tls1.2 $($c --tlsv1.2 --tls-max 1.2 -o /dev/null -w '%{{http_code}}' --cacert $ca https://10.0.0.6/style.css)\"\n\
             $c -o /dev/null --cacert /job/g8/other-ca.pem https://10.0.0.6/; echo \"untrusted rc=$?\"\n\
             echo \"redirect $($c -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://10.0.0.6/)\"\n\
             printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' | timeout 60 openssl s_client -ign_eof \
               -verify_return_error -alpn http/1.1 -CAfile $ca -connect 10.0.0.6:443 2>&1 \
               | grep -E 'Verify return code|ALPN protocol|^HTTP/1.1' | sed 's/^/s_client: /'\n\
             echo metrics-begin; $c $wait http://10.0.1.6:9090/metrics; echo metrics-end\n\
             xl destroy $1\n"
        )),
        timeout: Some(240),
        ..Guest::default()
    });

    let boot = sandbox
        .boot(&guests, Duration::from_secs(1500))
        .unwrap_or_else(|e| panic!("{e}"));
    let report = |i: usize| {
        let g = &boot.guests[i];
        format!(
            "guest {}: {:?}\nconsole:\n{}\nhook:\n{}\nxl:\n{}",
            i + 1,
            g.reason,
            g.console,
            g.hook,
            g.xl
        )
    };
    for (i, g) in boot.guests.iter().enumerate() {
        eprintln!(
            "{}\ncreate -> console {:?} s, create -> end {:?} s\n",
            report(i),
            g.create_to_console,
            g.create_to_end
        );
    }

    // A real Xen, with SVM and nested paging (HAP), ran the guests.
    assert!(boot.serial.contains("HVM: SVM enabled"), "{}", boot.serial);
    assert!(
        boot.serial
            .contains("Hardware Assisted Paging (HAP) detected"),
        "{}",
        boot.serial
    );

    let g = &boot.guests[0];
    assert_eq!(g.reason, Reason::Poweroff, "{}", report(0));
    assert!(
        g.console.contains("Hello, Xen! (1/2)\nHello, Xen! (2/2)\n"),
        "{}",
        report(0)
    );
    assert_eq!(g.exit_status(), Some(0), "{}", report(0));

    let g = &boot.guests[1];
    assert_eq!(g.reason, Reason::Poweroff, "{}", report(1));
    for check in [
        "wall clock: ok",
        "sleep: ok",
        "random: ok",
        "block write and read back: ok",
        "block past the end: ok",
    ] {
        assert!(g.console.contains(check), "{check}: {}", report(1));
    }
    assert!(
        g.console.contains("storage: 2048 sectors of 512 bytes"),
        "{}",
        report(1)
    );
    assert_eq!(g.exit_status(), Some(0), "{}", report(1));
    let written: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
    assert!(
        g.hook.contains(&format!("tail {}", sha256_hex(&written))),
        "{}",
        report(1)
    );

    let g = &boot.guests[2];
    assert_eq!(g.reason, Reason::Crash, "{}", report(2));
    assert!(g.console.contains("panicked at"), "{}", report(2));
    assert!(g.console.contains("asked to panic"), "{}", report(2));

    let g = &boot.guests[3];
    assert!(g.hook.contains("echoed: hello xen"), "{}", report(3));
    let idle: Vec<f64> = g
        .hook
        .lines()
        .find_map(|l| l.strip_prefix("idle cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(idle.len(), 2, "{}", report(3));
    assert!(
        idle[1] - idle[0] < 1.0,
        "an idle echo used CPU: {idle:?}\n{}",
        report(3)
    );

    let g = &boot.guests[4];
    let dir = root().join("specs/site/public");
    for f in files {
        let want = sha256_hex(&std::fs::read(dir.join(f)).unwrap());
        assert!(
            g.hook.contains(&format!("{f} {want}")),
            "{f}: {}",
            report(4)
        );
    }

    let g = &boot.guests[5];
    // The service says ok to the token and echoes what follows; a wrong token is denied.
    assert!(g.hook.contains("token: ok\nwith token\n"), "{}", report(5));
    assert!(g.hook.contains("wrong: denied\n"), "{}", report(5));
    assert!(!g.hook.contains("hi\n"), "{}", report(5));
    // Neither the .xl (its command line included) nor anything on the serial line (Xen's
    // and dom0's messages, every guest's console) carries the token.
    assert!(!xl_text.contains(token));
    assert!(!boot.serial.contains(token));

    let metric = |hook: &str, name: &str| -> Option<f64> {
        let body = hook
            .split("metrics-begin\n")
            .nth(1)?
            .split("metrics-end")
            .next()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let g = &boot.guests[6];
    let index = sha256_hex(&std::fs::read(dir.join("index.html")).unwrap());
    assert!(g.hook.contains(&format!("index {index}")), "{}", report(6));
    // The management interface serves the metrics, which count the service's responses.
    assert!(
        metric(&g.hook, "http_responses_total{status=\"2xx\"}").is_some_and(|v| v >= 1.0),
        "{}",
        report(6)
    );
    assert!(
        metric(&g.hook, "tcp_connections_opened_total").is_some_and(|v| v >= 1.0),
        "{}",
        report(6)
    );
    // Neither address serves the other's port (curl: 7, refused; 28, no answer).
    for which in ["service:9090", "management:80"] {
        let rc = g
            .hook
            .lines()
            .find_map(|l| l.strip_prefix(which)?.strip_prefix(" rc="));
        assert!(
            matches!(rc, Some("7" | "28")),
            "{which}: {rc:?}\n{}",
            report(6)
        );
    }

    let g = &boot.guests[7];
    assert!(!g.hook.contains("no curl in dom0"), "{}", report(7));
    assert!(g.hook.contains(&format!("https {index}")), "{}", report(7));
    assert!(g.hook.contains("tls1.2 200\n"), "{}", report(7));
    // With another CA, curl refuses the certificate (60: not verified).
    assert!(g.hook.contains("untrusted rc=60\n"), "{}", report(7));
    assert!(
        g.hook.contains("redirect 301 https://10.0.0.6/\n"),
        "{}",
        report(7)
    );
    // openssl s_client: a verified handshake, ALPN http/1.1, the page.
    for line in [
        "s_client: Verify return code: 0 (ok)",
        "s_client: ALPN protocol: http/1.1",
        "s_client: HTTP/1.1 200 OK",
    ] {
        assert!(g.hook.contains(line), "{line}: {}", report(7));
    }
    let ok = metric(&g.hook, "tls_handshakes_total{outcome=\"succeeded\"}");
    assert!(ok.is_some_and(|v| v >= 3.0), "{ok:?}\n{}", report(7));
    // The key is in neither the .xl nor anything on the serial line.
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!https_xl_text.contains(line));
        assert!(
            !boot.serial.contains(line),
            "a line of the key on the serial line"
        );
    }
}

/// A dom0 shell prelude for the hooks: `$c` is curl, quiet, with a deadline; `$wait`
/// retries until the guest answers (it is still booting when the hook starts).
const CURL: &str =
    "c='curl -sS --max-time 30'; wait='--retry 90 --retry-delay 1 --retry-all-errors'";

#[test]
fn an_exit_status_reaches_compose_run() {
    let tmp = tempfile::tempdir().unwrap();
    let o = compose_in(tmp.path(), &["init", "status", "--template", "hello"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let proj = tmp.path().join("status");
    let lib = proj.join("hello/src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    // The application returns `times` as its exit status.
    let src = src.replacen("    times: u32,\n) {", "    times: u32,\n) -> u8 {", 1);
    let src = format!(
        "{}    times as u8\n}}\n",
        src.trim_end().strip_suffix('}').unwrap()
    );
    std::fs::write(&lib, src).unwrap();
    let o = compose_in(
        &proj,
        &[
            "run",
            "hello.kdl",
            "--target",
            "xen",
            "--",
            "--name=status",
            "--times=7",
        ],
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(7), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("Hello, status! (7/7)"), "{out}");
    assert!(!out.contains("compose: exit status"), "{out}");
    assert!(err.contains("local Xen sandbox"), "{err}");
}
