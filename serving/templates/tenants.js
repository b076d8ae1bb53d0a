// Tenants at the proxy (serving/tenants.py): written as is into the tenants directory and
// imported by the main nginx.conf (js_import). njs 0.7.9 or later (Debian bookworm's
// libnginx-mod-http-js; the nginx:1.30 alpine image ships a newer one): ES5 plus let/const,
// no js_shared_dict_zone. njs gives every request its own copy of this module's globals.

// $tenant_key_hash: lower-case hex SHA-256 of the bearer key, "" without one. The scheme is
// matched without regard to case and the key is the rest after the first space, as vLLM 0.33
// reads it (vllm/entrypoints/serve/middleware/authenticate.py). The key itself is never stored.
function key_hash(r) {
    var header = r.headersIn.Authorization;
    if (!header) {
        return "";
    }
    var space = header.indexOf(" ");
    if (space < 0 || header.slice(0, space).toLowerCase() !== "bearer") {
        return "";
    }
    return require("crypto").createHash("sha256").update(header.slice(space + 1)).digest("hex");
}

// Token counts from vLLM's `usage` object, read from the response as it passes: a plain JSON
// answer carries one, a stream with include_usage (forced on by --enable-force-include-usage)
// ends with one. Every chunk goes on at once (no buffering); only the tail of the text seen so
// far is kept, so a `usage` object cut between two chunks is still read.
var USAGE = /"usage"\s*:\s*\{/g;
var PROMPT = /"prompt_tokens"\s*:\s*(\d+)\s*[,}]/;
var COMPLETION = /"completion_tokens"\s*:\s*(\d+)\s*[,}]/;
var MAX_USAGE_TEXT = 4096;  // a usage object with its details is far smaller
var tail = "";

function scan(r, text) {
    var match, pending = -1;
    USAGE.lastIndex = 0;
    while ((match = USAGE.exec(text)) !== null) {
        var object = text.slice(match.index, match.index + MAX_USAGE_TEXT);
        var prompt = PROMPT.exec(object), completion = COMPLETION.exec(object);
        if (prompt && completion) {
            r.variables.prompt_tokens = prompt[1];
            r.variables.completion_tokens = completion[1];
            pending = -1;
        } else {
            pending = match.index;
        }
    }
    if (pending >= 0) {
        return text.slice(pending, pending + MAX_USAGE_TEXT);  // wait for the rest of it
    }
    return text.slice(-16);  // enough for a `"usage":{` cut in two
}

function usage_filter(r, data, flags) {
    r.sendBuffer(data, flags);
    if (data.length || tail.length) {
        var text = tail + data;
        tail = text.indexOf("usage") < 0 && text.length > 16 ? text.slice(-16) : scan(r, text);
    }
}

export default {key_hash: key_hash, usage_filter: usage_filter};
