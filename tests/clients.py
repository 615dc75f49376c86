"""Published ActiveCampaign client libraries through specgate, as an app would use them.

Run by tests/clients.sh with the gateway's base URL and its audit log. Each library is
given the gateway as its account URL and a key of the app's own (specgate drops it and
injects the stored token, which the stand-in upstream insists on: a request without it is
answered 500). Checked for each library: a valid create comes back as the library's
success value carrying the upstream's id; an invalid one comes back as the library's own
structured error naming the missing field, and is not forwarded; a URL written with a
trailing slash reaches the operation. Then the audit log holds exactly the creates the
libraries saw succeed, with the ids they were given.
"""

import asyncio
import json
import sys

from activecampaign.client import Client
from mcp_activecampaign.client import ActiveCampaignClient, ActiveCampaignError

BASE, AUDIT_LOG = sys.argv[1], sys.argv[2]
APP_KEY = "the-apps-own-key-never-forwarded"


def connection(n, **drop):
    body = {
        "service": "fooCommerce",
        "externalid": f"store-{n}",
        "name": f"Store {n}, Inc.",
        "logoUrl": "http://example.com/i/foo.png",
        "linkUrl": "http://example.com/foo/",
    }
    for field in drop:
        del body[field]
    return {"connection": body}


def check(condition, what, got):
    if not condition:
        sys.exit(f"FAIL: {what}: got {got!r}")
    print(f"ok: {what}")


def activecampaign_python(created):
    """activecampaign-python 1.0.10: requests; parses a body as JSON only when the
    Content-Type contains application/json, and returns the parsed body either way."""
    client = Client(BASE, APP_KEY)
    done = client.deepdataintegrations.create_a_connection(connection(1))
    check(
        isinstance(done, dict) and done["connection"]["name"] == "Store 1, Inc.",
        "activecampaign-python: a valid create returns the connection",
        done,
    )
    created.append(done["connection"]["id"])

    refused = client.deepdataintegrations.create_a_connection(connection(2, name=True))
    check(
        isinstance(refused, dict),
        "activecampaign-python: a refusal is parsed as JSON, like the API's own 422",
        refused,
    )
    pointers = [e["source"]["pointer"] for e in refused.get("errors", [])]
    check(
        pointers == ["/connection/name"] and "'name'" in refused["message"],
        "activecampaign-python: the refusal names the missing field in errors[] and message",
        refused,
    )


async def mcp_activecampaign(created):
    """mcp-activecampaign 0.2.0: httpx; raises ActiveCampaignError(message, status, errors)
    from the body's "message", else its "errors" titles."""
    # The library adds /api/3 to the account URL and strips a trailing slash.
    client = ActiveCampaignClient(BASE + "/", APP_KEY)
    try:
        async def create(path, n, what):
            done = await client.post(path, json=connection(n))
            check(done["connection"]["externalid"] == f"store-{n}", f"mcp-activecampaign: {what}", done)
            created.append(done["connection"]["id"])

        await create("/connections", 3, "a valid create returns the connection")

        try:
            refused = await client.post("/connections", json=connection(4, linkUrl=True))
            check(False, "mcp-activecampaign: an invalid create raises", refused)
        except ActiveCampaignError as error:
            check(
                error.status == 422
                and "'linkUrl'" in error.message
                and [e["source"]["pointer"] for e in error.errors] == ["/connection/linkUrl"],
                "mcp-activecampaign: the refusal is an ActiveCampaignError naming the field",
                (error.status, error.message, error.errors),
            )

        # The old API's key in the query: removed, or the stand-in answers 500.
        await create(
            f"/connections?api_key={APP_KEY}", 6, "an api_key in the query is dropped, not forwarded"
        )
        # As activecampaign3 writes every URL.
        await create("/connections/", 5, "/api/3/connections/ is the create")
    finally:
        await client.close()


def main():
    created = []
    activecampaign_python(created)
    asyncio.run(mcp_activecampaign(created))
    with open(AUDIT_LOG) as log:
        records = [json.loads(line) for line in log]
    audited = [r["resource_id"] for r in records if r["outcome"] == "created"]
    check(
        audited == created and len(set(created)) == 4,
        "the audit log holds each create the libraries saw succeed, with its upstream id",
        (audited, created),
    )
    check(
        all(r["operation_id"] == "create-connection" for r in records),
        "every record is the create operation; the refused creates were never attempted",
        [(r["outcome"], r["operation_id"]) for r in records],
    )
    paths = [r["path"] for r in records if r["outcome"] == "created"]
    check(
        paths[-1] == "/api/3/connections/" and paths[0] == "/api/3/connections",
        "the trailing-slash create was the operation, recorded as the path the library sent",
        paths,
    )
    check(
        len(records) == 8,
        "an attempted and a created record per forwarded create, none for the refusals",
        [r["outcome"] for r in records],
    )


main()
