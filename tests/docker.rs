//! The Docker image, tested as a binary (there is no Docker engine on the build machines): the Dockerfile's
//! ENTRYPOINT, CMD and ENV, plus the README's `docker run` arguments and the compose file's `command`, are run
//! against the built binary and must parse and serve.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use support::*;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The instructions of the Dockerfile's last stage, continuation lines joined.
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    user: String,
    expose: Vec<String>,
    build_stage: String,
}

fn parse_dockerfile(text: &str) -> Image {
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    let build_stage = instructions[..last_from].join("\n");
    let mut image = Image {
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        env: Vec::new(),
        user: "root".into(),
        expose: Vec::new(),
        build_stage,
    };
    for line in &instructions[last_from..] {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let exec_form = |rest: &str| -> Vec<String> {
            serde_json::from_str(rest.trim())
                .unwrap_or_else(|e| panic!("{word} must use the exec (JSON) form: {rest} ({e})"))
        };
        match word {
            "ENTRYPOINT" => image.entrypoint = exec_form(rest),
            "CMD" => image.cmd = exec_form(rest),
            "USER" => image.user = rest.trim().to_string(),
            "EXPOSE" => image.expose = rest.split_whitespace().map(String::from).collect(),
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                    image
                        .env
                        .push((k.to_string(), v.trim_matches('"').to_string()));
                }
            }
            _ => {}
        }
    }
    image
}

/// `:80`, `0.0.0.0:8989`: same interfaces, any free port.
fn free_port(address: &str) -> String {
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
    format!("{host}:0")
}

/// What a test run needs instead of the container's network: no fixed port, and the test's Redis in place of
/// any Redis host (so nothing but loopback is ever dialed).
fn localize(
    args: &[String],
    docker_env: &[(String, String)],
    redis: &RedisServer,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut listen_given = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        out.push(arg.clone());
        let takes_address = matches!(arg.as_str(), "--listen" | "-l" | "--metrics-address");
        listen_given |= matches!(arg.as_str(), "--listen" | "-l");
        if takes_address {
            out.push(free_port(iter.next().expect("a flag value")));
        } else if arg.ends_with("-redis-host") {
            iter.next().expect("a flag value");
            out.push("127.0.0.1".to_string());
        }
    }
    let mut env: Vec<(String, String)> = docker_env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "HYPACHE_LISTEN" | "HYPACHE_METRICS_ADDRESS" => (k.clone(), free_port(v)),
            _ if k.ends_with("_REDIS_HOST") => (k.clone(), "127.0.0.1".to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    listen_given |= env.iter().any(|(k, _)| k == "HYPACHE_LISTEN");
    if !listen_given {
        // The default, PlanB's 0.0.0.0:8989, on a free port.
        out.extend(["--listen".to_string(), "0.0.0.0:0".to_string()]);
    }
    let port = redis.port().to_string();
    env.push(("HYPACHE_READ_REDIS_PORT".to_string(), port.clone()));
    env.push(("HYPACHE_WRITE_REDIS_PORT".to_string(), port));
    (out, env)
}

fn loopback(addr: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// Run the image's command line with `args` after the image name, and check that it serves.
#[track_caller]
fn run_like_the_image(image: &Image, args: &[String], docker_env: &[(String, String)]) {
    let redis = RedisServer::start();
    let backend = Backend::named("from-docker");
    redis.set_frontend("docker.test", &[&backend.url()]);
    let mut argv: Vec<String> = image.entrypoint[1..].to_vec();
    argv.extend(if args.is_empty() {
        image.cmd.clone()
    } else {
        args.to_vec()
    });
    // The image's ENV first, then `docker run -e`, which overrides it.
    let mut given_env = image.env.clone();
    given_env.extend(docker_env.iter().cloned());
    let (argv, env) = localize(&argv, &given_env, &redis);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let proxy = Proxy::start_custom(&argv, &env)
        .unwrap_or_else(|e| panic!("the image's command line {argv:?} did not start: {e}"));
    let addr = loopback(proxy.addr());
    let ping = get(addr, "__ping__", "/", &[]);
    assert_eq!((ping.status, ping.body_str().as_str()), (200, "OK"));
    assert_eq!(
        get(addr, "docker.test", "/hello", &[]).body_str(),
        "from-docker"
    );
    if image
        .env
        .iter()
        .any(|(k, v)| k == "HYPACHE_ACCESS_LOG" && v == "stdout")
    {
        assert_eventually(SOON, "the access log on stdout", || {
            proxy
                .stdout_lines()
                .iter()
                .any(|l| l.contains("\"GET /hello HTTP/1.1\" 200"))
        });
    }
    if argv.contains(&"--metrics-address") {
        let metrics = loopback(proxy.metrics_addr());
        assert!(support::metrics::scrape(metrics)
            .text
            .contains("planb_reverseproxy_backends_responses_total"));
    }
}

#[test]
fn the_dockerfile_builds_locked_and_runs_hypache_as_an_unprivileged_user() {
    let image = parse_dockerfile(&repo_file("docker/Dockerfile"));
    assert_eq!(image.entrypoint, ["hypache"]);
    assert!(
        image.build_stage.contains("cargo build --release --locked"),
        "{}",
        image.build_stage
    );
    assert!(
        image.build_stage.contains("COPY .cargo"),
        "the task-dump cfgs of .cargo/config.toml must reach the build"
    );
    let uid = image.user.split(':').next().unwrap();
    assert!(
        !["", "root", "0"].contains(&uid),
        "runs as {:?}",
        image.user
    );
    assert!(image.expose.contains(&"8989".to_string()));
}

#[test]
fn the_image_with_no_arguments_serves_on_planbs_default_address() {
    let image = parse_dockerfile(&repo_file("docker/Dockerfile"));
    assert!(image.cmd.is_empty(), "no CMD: the flags' defaults apply");
    let help = spawn_raw(&["--help"], &[], secs(15)).stdout;
    assert!(help.contains("[default: 0.0.0.0:8989]"), "{help}");
    // `docker run IMAGE` with nothing after it: the flags' defaults, i.e. 0.0.0.0:8989, here on a free port.
    run_like_the_image(&image, &[], &[]);
}

#[test]
fn every_docker_run_in_the_readme_parses_and_serves() {
    let image = parse_dockerfile(&repo_file("docker/Dockerfile"));
    let readme = repo_file("README.md");
    let commands: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("docker run "))
        .collect();
    assert!(
        commands
            .iter()
            .any(|c| c.contains("--net=host") && c.contains("--listen \":80\"")),
        "the README shows PlanB's `docker run -d --net=host IMAGE --listen \":80\"`: {commands:#?}"
    );
    for command in commands {
        let words: Vec<String> = command
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect();
        let at = words
            .iter()
            .position(|w| w == "hypache")
            .unwrap_or_else(|| panic!("no image `hypache` in {command}"));
        let mut docker_env = Vec::new();
        let mut options = words[2..at].iter();
        while let Some(option) = options.next() {
            if option == "-e" {
                let (k, v) = options.next().unwrap().split_once('=').unwrap();
                docker_env.push((k.to_string(), v.to_string()));
            }
        }
        run_like_the_image(&image, &words[at + 1..], &docker_env);
    }
}

#[test]
fn the_compose_command_parses_and_serves() {
    let image = parse_dockerfile(&repo_file("docker/Dockerfile"));
    let compose = repo_file("docker/compose.yml");
    let service = &compose[compose.find("\n  hypache:\n").expect("a hypache service")..];
    let line = service
        .lines()
        .find(|l| l.trim_start().starts_with("command: ["))
        .expect("the hypache service's command as a flow sequence");
    let args: Vec<String> =
        serde_json::from_str(line.trim_start().trim_start_matches("command:").trim()).unwrap();
    assert!(args.contains(&"--metrics-address".to_string()));
    run_like_the_image(&image, &args, &[]);
}
