"""The deployment files, checked without a Docker engine: docker-compose.yml, Dockerfile, .env.example, deploy/.

What can be known statically is checked against the code it must agree with:
the Compose specification's JSON schema (tests/data/compose-spec.json, from
the compose-spec repository), every path a build or a mount names, every
``LOGPIPE_*`` variable against the settings logpipe declares (name and value),
and the Logstash pipeline's indices against what ``logpipe ship``, ``logpipe
search`` and the Kibana objects use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import REPO
from logpipe import config, kibana, plugins, tail
from logpipe import elasticsearch as es
from logpipe import ship as shipper

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
LOGSTASH_CONF = REPO / "deploy" / "logstash" / "pipeline" / "logstash.conf"
LOGSTASH_TEMPLATE = REPO / "deploy" / "logstash" / "templates" / "logpipe.json"
KIBANA_OBJECTS = REPO / "deploy" / "kibana" / "logpipe.ndjson"

#: ${VAR}, ${VAR:-default}, ${VAR-default} (compose interpolation)
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the tests run on 3.10 too
    return dict(tomllib.loads((REPO / "pyproject.toml").read_text()))


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def interpolate(value: str) -> str:
    """*value* as compose would see it without a .env: each ${VAR:-default} replaced by its default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


# -- what logpipe's configuration accepts -----------------------------------------------------


def settings_classes() -> dict[str, tuple[type, str]]:
    """Every LOGPIPE_* variable -> (options class, prefix), from the same sources as `logpipe exporters`."""
    sources: list[tuple[type, str]] = [
        (config.Settings, config.CORE_PREFIX),
        (shipper.ShipOptions, shipper.ENV_PREFIX),
        (tail.TailOptions, tail.ENV_PREFIX),
        (kibana.KibanaOptions, kibana.ENV_PREFIX),
    ]
    for name in plugins.available():
        sources.append((plugins.load_class(name).Options, plugins.options_prefix(name)))
    known: dict[str, tuple[type, str]] = {}
    for cls, prefix in sources:
        for field in dataclasses.fields(cls):
            known[config.env_name(prefix, field.name)] = (cls, prefix)
    return known


def check_logpipe_variables(variables: dict[str, str], where: str) -> None:
    """Each LOGPIPE_* name must be a setting and its value must load (ConfigError names the variable)."""
    known = settings_classes()
    for name, value in variables.items():
        if not name.startswith("LOGPIPE_"):
            continue
        assert name in known, f"{where}: {name} is not a logpipe setting (see docs/configuration.md)"
        cls, prefix = known[name]
        config.load(cls, prefix, environ={name: interpolate(value)})


def test_settings_catalogue_is_complete() -> None:
    """The catalogue the checks below use knows the settings the deployment relies on."""
    known = settings_classes()
    for name in ("LOGPIPE_EXPORTER", "LOGPIPE_SHIP_STATUS_FILE", "LOGPIPE_TAIL_PATHS", "LOGPIPE_KAFKA_TOPIC"):
        assert name in known
    with pytest.raises(AssertionError, match="LOGPIPE_SHIP_TOPIC is not a logpipe setting"):
        check_logpipe_variables({"LOGPIPE_SHIP_TOPIC": "x"}, "here")  # the plural is the setting
    with pytest.raises(config.ConfigError, match="LOGPIPE_SHIP_STATUS_INTERVAL"):
        check_logpipe_variables({"LOGPIPE_SHIP_STATUS_INTERVAL": "often"}, "here")


# -- docker-compose.yml -------------------------------------------------------------------------


def test_compose_file_conforms_to_the_compose_specification() -> None:
    schema = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_catches_a_mistake() -> None:
    """The validation has teeth: a misspelt key fails it."""
    schema = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text())
    broken = compose()
    broken["services"]["shipper"]["depends_on"]["kafka"]["condition"] = "service_ready"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_stack_has_the_seed_services() -> None:
    names = set(services())
    assert {"kafka", "kafdrop", "elasticsearch", "kibana", "shipper", "kibana-setup"} <= names
    assert services()["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services()["logstash"]["profiles"] == ["logstash"]
    assert services()["tailer"]["profiles"] == ["tail"]
    es_env = environment(services()["elasticsearch"])
    assert es_env["xpack.security.enabled"] == "false"  # the laptop stack, said so in the header
    assert "security disabled" in COMPOSE.read_text()


def test_every_build_context_and_mounted_file_exists() -> None:
    for name, service in services().items():
        build = service.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            assert (context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: mounts {source}, which does not exist"
            else:
                assert source in compose()["volumes"], f"{name}: named volume {source} is not declared"


def test_services_wait_for_healthy_dependencies_that_have_a_health_check() -> None:
    dockerfile_has_healthcheck = "HEALTHCHECK" in DOCKERFILE.read_text()
    waited = 0
    for name, service in services().items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
            target = services()[dependency]
            check = target.get("healthcheck", {})
            has_check = ("test" in check) or ("build" in target and dockerfile_has_healthcheck)
            assert has_check and not check.get("disable"), f"{name} waits for {dependency}, which has no health check"
            waited += 1
    assert waited >= 6


def test_every_service_has_a_memory_limit_and_the_sum_fits_a_laptop() -> None:
    def size(text: str) -> int:
        number, unit = re.fullmatch(r"(\d+)([kmg])", text.lower()).groups()  # type: ignore[union-attr]
        return int(number) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]

    total = 0
    for name, service in services().items():
        assert "mem_limit" in service, f"{name} has no mem_limit"
        if not service.get("profiles"):
            total += size(str(service["mem_limit"]))
    assert total <= 6 << 30, f"default stack limits add up to {total / (1 << 30):.1f} GiB"


def test_every_interpolated_variable_is_in_env_example_with_the_same_default() -> None:
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    used = {m.group(1): m.group(2) for m in _INTERPOLATION.finditer(COMPOSE.read_text())}
    assert used, "no ${...} in the compose file?"
    for name, default in used.items():
        assert name in example, f"${{{name}}} is used in docker-compose.yml but not in .env.example"
        assert example[name] == default, f"{name}: .env.example says {example[name]!r}, compose defaults {default!r}"
    check_logpipe_variables(example, ".env.example")


def test_logpipe_variables_in_compose_are_settings_logpipe_accepts() -> None:
    checked = 0
    for name, service in services().items():
        env = environment(service)
        check_logpipe_variables(env, f"docker-compose.yml service {name}")
        checked += sum(k.startswith("LOGPIPE_") for k in env)
    assert checked >= 8


def test_shipper_configuration_loads_as_logpipe_ship_would() -> None:
    env = {k: interpolate(v) for k, v in environment(services()["shipper"]).items()}
    ship, es_options = shipper.load_options(environ=env)
    assert ship.topics == ("logpipe",)
    assert es_options.hosts == ("http://elasticsearch:9200",)
    assert es_options.replicas == 0


def test_tailer_configuration_loads_as_logpipe_tail_would() -> None:
    env = {k: interpolate(v) for k, v in environment(services()["tailer"]).items()}
    options = tail.load_options(environ=env)
    assert options.paths == ("/var/lib/logpipe/logs/*.jsonl*",)
    demo_env = environment(services()["demo-app"])
    assert Path(demo_env["LOGPIPE_FILE_PATH"]).match("*.jsonl")  # what the tailer's glob follows


# -- Dockerfile -------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def test_dockerfile_is_multi_stage_slim_non_root_with_logpipe_as_entry_point() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder")
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"] == "python:3.12-slim"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip wheel" in runs
    [user] = [rest for word, rest in steps if word == "USER"]
    assert user not in ("root", "0")
    [entry] = [rest for word, rest in steps if word == "ENTRYPOINT"]
    assert json.loads(entry) == ["logpipe"]
    [check] = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert json.loads(check.split("CMD", 1)[1])[:2] == ["logpipe", "health"]


def test_dockerfile_installs_this_project_with_the_ship_extra() -> None:
    project = pyproject()["project"]
    assert "ship" in project["optional-dependencies"]
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert f"'{project['name']}[ship]'" in runs


def test_dockerfile_copies_only_what_exists_and_is_in_the_build_context() -> None:
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    copied = 0
    for word, rest in instructions():
        if word == "COPY" and "--from" not in rest:
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such path"
                assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"
                copied += 1
    assert copied >= 3


def test_dockerfile_variables_are_settings_logpipe_accepts() -> None:
    env = dockerfile_env()
    assert "LOGPIPE_SHIP_STATUS_FILE" in env and "LOGPIPE_TAIL_STATUS_FILE" in env
    check_logpipe_variables(env, "Dockerfile")


def test_the_healthcheck_command_accepts_the_image_environment(tmp_path: Path) -> None:
    """Run the HEALTHCHECK's command with the image's ENV: not started yet is 1 (unhealthy), never 2 (usage)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    image_env = dockerfile_env()
    env.update(image_env)
    # The status files where the image has them, but under tmp_path: this machine is not the container.
    env["LOGPIPE_SHIP_STATUS_FILE"] = str(tmp_path / Path(image_env["LOGPIPE_SHIP_STATUS_FILE"]).name)
    env["LOGPIPE_TAIL_STATUS_FILE"] = str(tmp_path / Path(image_env["LOGPIPE_TAIL_STATUS_FILE"]).name)
    command = [str(Path(sys.executable).parent / "logpipe"), "health", "--quiet"]  # as the HEALTHCHECK runs it
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "no status file yet" in done.stderr


# -- Logstash, logpipe ship, logpipe search and Kibana agree on the indices -------------------


def logstash_settings() -> dict[str, str]:
    """``key => "value"`` pairs of the pipeline's first elasticsearch output (the KafkaLog one)."""
    lines = LOGSTASH_CONF.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "elasticsearch {")
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() == "}":
            break
        block.append(line)
    return dict(re.findall(r'^\s*(\w+)\s*=>\s*"?([^"\n]*?)"?\s*$', "\n".join(block), flags=re.MULTILINE))


def test_logstash_writes_the_daily_indices_logpipe_ship_writes() -> None:
    prefix = es.ElasticsearchOptions().index_prefix
    index = logstash_settings()["index"]
    match = re.fullmatch(r"(.+)-%\{\+YYYY\.MM\.dd\}", index)
    assert match, index
    assert match.group(1) == prefix
    # Joda's YYYY.MM.dd on @timestamp (set from Time, UTC) names the day index_name names.
    ts = 1764062251.0  # 2025-11-25T09:17:31Z
    assert es.index_name(prefix, ts) == f"{prefix}-2025.11.25"
    assert 'timezone => "UTC"' in LOGSTASH_CONF.read_text()
    assert 'match => ["Time"' in LOGSTASH_CONF.read_text()


def test_logstash_deduplicates_like_the_shipper() -> None:
    settings = logstash_settings()
    assert settings["document_id"] == "%{Id}"
    assert settings["action"] == "create"


def test_logstash_installs_logpipes_index_template() -> None:
    settings = logstash_settings()
    prefix = es.ElasticsearchOptions().index_prefix
    assert settings["template_name"] == es.template_name(prefix)  # the same template ship installs, not a rival
    mounted = [v for v in services()["logstash"]["volumes"] if v.startswith("./deploy/logstash/templates/")]
    assert [v.split(":")[1] for v in mounted] == [settings["template"]]
    expected = es.index_template(es.ElasticsearchOptions(replicas=0))
    actual = json.loads(LOGSTASH_TEMPLATE.read_text())
    for body in (expected, actual):
        body.pop("_meta")
    assert actual == expected, "regenerate deploy/logstash/templates/logpipe.json from es.index_template"


def test_logstash_reads_the_topic_the_shipper_reads() -> None:
    topic = re.search(r'topics\s*=>\s*\["\$\{LOG_TOPIC:([^}]+)\}"\]', LOGSTASH_CONF.read_text())
    assert topic, 'topics => ["${LOG_TOPIC:...}"]'
    assert topic.group(1) == interpolate(environment(services()["shipper"])["LOGPIPE_SHIP_TOPICS"])
    assert environment(services()["logstash"])["LOG_TOPIC"] == "${LOG_TOPIC:-logpipe}"


def test_logpipe_search_and_kibana_look_where_the_indices_are() -> None:
    prefix = es.ElasticsearchOptions().index_prefix
    views = [json.loads(line) for line in KIBANA_OBJECTS.read_text().splitlines()]
    [title] = [o["attributes"]["title"] for o in views if o["type"] == "index-pattern"]
    assert title == es.index_pattern(prefix)  # what logpipe search queries
    assert re.fullmatch(title.replace("*", ".*"), logstash_settings()["index"].split("-%")[0] + "-2025.11.25")


# -- the install line -------------------------------------------------------------------------


def test_readme_installs_this_project_not_the_other_logpipe() -> None:
    name = pyproject()["project"]["name"]
    assert name != "logpipe"  # the index's logpipe is an unrelated project
    assert name == plugins.DISTRIBUTION
    readme = (REPO / "README.md").read_text()
    installs = re.findall(r"^pip install (.+)$", readme, flags=re.MULTILINE)
    assert installs
    for line in installs:
        target = line.split("#")[0].strip().strip("'")
        assert not re.match(r"logpipe(\[|$|\s)", target), f"README: pip install {line}"
    assert "pip install ." in readme


# -- the documentation site -------------------------------------------------------------------


def test_every_docs_page_is_in_the_site_navigation() -> None:
    """A page left out of mkdocs.yml's nav is only an INFO line for mkdocs, even with --strict."""
    nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), flags=re.MULTILINE))
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert pages == nav, f"not in nav: {sorted(pages - nav)}; missing files: {sorted(nav - pages)}"


def test_ci_builds_the_site_strictly() -> None:
    assert re.search(r"^make site$", (REPO / ".ci" / "run").read_text(), flags=re.MULTILINE)
    assert "mkdocs build --strict" in (REPO / "Makefile").read_text()
