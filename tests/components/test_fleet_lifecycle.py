"""A fleet's review leftovers under mocks: a Route 53 lookup the deploy role may not make is an
error naming the permission (never "no zone")."""

from tests.components.test_fleet_program import API_KEY, prod_fleet  # noqa: F401 - fixture helpers
from tests.harness import AwsWorld, stack_config

DENIED = (
    "reading Route 53 Hosted Zone: operation error Route 53: ListHostedZones, https response error "
    "StatusCode: 403, RequestID: 0f0e, api error AccessDenied: User: "
    "arn:aws:sts::123456789012:assumed-role/deploy-prod/ci is not authorized to perform: "
    "route53:ListHostedZones because no identity-based policy allows the route53:ListHostedZones action"
)


def test_a_route_53_access_denied_names_the_permission_instead_of_reading_as_no_zone(program):
    world = AwsWorld()
    world.route53_error = DENIED
    run = program({**stack_config("prod"), "replicas": 3, "domain": "llm.example.com"}, stack="prod",
                  secrets={"apiKey": API_KEY}, world=world, expect_error=True)
    said = str(run.error)
    assert "vllm-deploy:domain=llm.example.com" in said
    assert "AccessDenied" in said and "lacks route53:ListHostedZones" in said
    assert "unset domain" in said  # a fix that works without the permission
    assert not run.of_type("aws:lb/loadBalancer:LoadBalancer")  # refused before anything is made
    # "No zone" is still only a warning, not this error.
    assert prod_fleet(program, domain="llm.example.com").error is None


def test_the_groups_warmup_and_capacity_wait_follow_the_models_expected_start(program):
    """Two models ten times apart in size: the larger one's replicas take minutes longer to
    hydrate their weights, and the group waits and warms up for that long (not a fixed minute)."""
    from components.fleet_group import replica_start
    from config.validation import parse
    from sizing.choice import plan

    groups = {}
    for model in ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-72B-Instruct"):
        keys = {"model": model, "readinessTimeoutMinutes": 5, "maxHourlyPriceUsd": 20}
        group = prod_fleet(program, **keys).one("aws:autoscaling/group:Group").plain
        prod = {k: v for k, v in stack_config("prod").items() if ":" not in k}
        settings = parse({**prod, **keys, "replicas": 3})
        expected = replica_start(settings, plan(settings))
        warmup = int(group["defaultInstanceWarmup"])
        assert warmup == expected.weights_s + expected.engine_s
        assert group["instanceRefresh"]["preferences"]["instanceWarmup"] == str(warmup)
        wait_minutes = int(group["waitForCapacityTimeout"].removesuffix("m"))
        assert wait_minutes * 60 >= 2 * expected.total_s > (wait_minutes - 1) * 60
        groups[model] = (warmup, wait_minutes)
    (small_warmup, small_wait), (large_warmup, large_wait) = groups.values()
    assert large_warmup - small_warmup > 6 * 60 and large_wait > small_wait


def test_old_images_go_only_after_the_refresh_succeeded_and_destroy_removes_them_all(program):
    """P11: the image resource stays retained on delete (a deregistered image stops launches and
    rollbacks); the prune runs after the refresh wait (which fails `up` when the refresh fails)
    with the new image's id; the destroy guard is deleted after the image, template and group."""
    from components.fleet_image_cleanup import prune_command

    run = prod_fleet(program)
    ami = run.one("aws:ec2/amiFromInstance:AmiFromInstance")
    assert ami.retain_on_delete and not ami.delete_before_replace
    prune = run.named("vllm-image-prune").plain
    assert run.named("vllm-image-prune").depends_on(run.named("vllm-replicas-refresh-wait"))
    assert prune["create"] == prune_command("prune") and "delete" not in prune
    image_id = prune["environment"]["CURRENT_IMAGE_ID"]
    assert image_id and image_id == run.one("aws:ec2/launchTemplate:LaunchTemplate").plain["imageId"]
    assert prune["triggers"] == [image_id]  # runs again with each new image, only then
    assert prune["environment"]["STACK"] == "prod" and prune["environment"]["PROJECT"] == "vllm-deploy"
    guard = run.named("vllm-builder-image-destroy")
    assert guard.plain["delete"] == prune_command("destroy") and not guard.plain.get("triggers")
    assert ami.depends_on(guard)  # so the guard's delete runs after the image's (and all above it)
    template = run.one("aws:ec2/launchTemplate:LaunchTemplate")
    assert not guard.depends_on(template) and not guard.depends_on(run.one("aws:autoscaling/group:Group"))


def test_the_benchmark_measures_one_replica_on_the_builder_before_the_image_is_made(program):
    """benchmarkOnDeploy on a fleet: the builder serves the replica's vLLM, waits for it, runs
    the single host's benchmark, stops it, and only then is cleaned, stopped and imaged. The key
    reaches those steps only as a secret environment; the figures are the stack's `benchmark`."""
    from tests.harness import is_secret, plain_text

    run = prod_fleet(program, benchmarkOnDeploy=True)
    # The compile-cache warm-up (fast start) between the install and the benchmark.
    chain = ["vllm-builder-replica-install", "vllm-builder-compile-cache", "vllm-builder-bench-serve",
             "vllm-builder-bench-ready",
             "vllm-builder-benchmark-run", "vllm-builder-bench-stop", "vllm-builder-bake-cleanup",
             "vllm-builder-stopped", "vllm-builder-image"]
    for before, after in zip(chain, chain[1:]):
        assert run.named(after).depends_on(run.named(before)), f"{after} must wait for {before}"
    serve, stop = run.named("vllm-builder-bench-serve"), run.named("vllm-builder-bench-stop")
    assert serve.plain["environment"]["VLLM_DEPLOY_BUILDER_ACTION"] == "start"
    assert stop.plain["environment"]["VLLM_DEPLOY_BUILDER_ACTION"] == "stop"
    for step in ("vllm-builder-bench-serve", "vllm-builder-bench-ready", "vllm-builder-benchmark-run"):
        inputs = run.named(step).inputs
        env = inputs["environment"]
        assert is_secret(env) or is_secret(env["VLLM_API_KEY"]), step
        assert run.named(step).plain["environment"]["VLLM_API_KEY"] == API_KEY
        assert API_KEY not in plain_text(inputs), step
        assert "VLLM_API_KEY" not in run.named(step).plain["create"].split("--preserve-env=")[0]
    # The builder is stopped once baked: a benchmarkTrigger change must not re-run a step there.
    assert not any("benchmarkTrigger" in str(t) for t in run.named("vllm-builder-benchmark-run").plain["triggers"])
    assert "benchmark" in run.exports
    quiet = prod_fleet(program)  # prod's own benchmarkOnDeploy: false
    assert not [r for r in quiet.resources if "-bench" in r.name] and "benchmark" not in quiet.exports
    assert quiet.named("vllm-builder-bake-cleanup").depends_on(quiet.named("vllm-builder-compile-cache"))
    assert quiet.named("vllm-builder-compile-cache").depends_on(quiet.named("vllm-builder-replica-install"))


def test_a_readiness_bound_below_the_expected_load_is_warned_with_a_working_value(program):
    short = prod_fleet(program, model="Qwen/Qwen2.5-72B-Instruct", maxHourlyPriceUsd=20, readinessTimeoutMinutes=5)
    (warning,) = [line for line in short.logs if "readinessTimeoutMinutes=5" in line]
    needed = int(warning.split("set readinessTimeoutMinutes to ")[1].split()[0])
    assert "replace replicas still loading" in warning
    fixed = prod_fleet(program, model="Qwen/Qwen2.5-72B-Instruct", maxHourlyPriceUsd=20,
                       readinessTimeoutMinutes=needed)
    assert not [line for line in fixed.logs if "readinessTimeoutMinutes=" in line]
