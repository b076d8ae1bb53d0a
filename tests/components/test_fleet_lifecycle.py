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
