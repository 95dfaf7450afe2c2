/*
 * test_template.c - plugboard_template_render: fields, envelope fields,
 * filters (money, date, default), literal fallbacks and escape modes.
 *
 * Events are built with the host's real builder and decoded into the real
 * view, and rendered through the host's real API table, exactly as a
 * connector sees them.
 */
#include <criterion/criterion.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plugboard/helpers.h>

#include "envelope.h"
#include "hostapi.h"

/* An event of type with key and data (a JSON object); caller destroys. */
static pb_envelope_t *
s_event(const char *type, const char *key, const char *json_data)
{
    pb_builder_t *b = pb_builder_new("stripe", type);
    cr_assert_not_null(b);
    if (key)
        cr_assert_eq(pb_builder_set_key(b, key), 0);
    pb_builder_set_time_ms(b, 1714564800000); /* 2024-05-01 12:00 UTC */
    json_t *data = json_loads(json_data, 0, NULL);
    cr_assert(json_is_object(data), "bad test JSON: %s", json_data);
    const char *k;
    json_t *v;
    json_object_foreach(data, k, v)
    {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        cr_assert_eq(pb_builder_set_json(b, k, text, strlen(text)), 0);
        free(text);
    }
    json_decref(data);
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    pb_builder_destroy(&b);
    int err = 0;
    char why[256];
    pb_envelope_t *env =
        pb_envelope_decode(frame, len, NULL, &err, why, sizeof why);
    free(frame);
    cr_assert_not_null(env, "decode: %s", why);
    return env;
}

/* Render tmpl against data and compare with want. */
static void
s_expect(const char *json_data, const char *tmpl, plugboard_escape_t esc,
         const char *want)
{
    const plugboard_host_api_t *api = pb_host_api();
    pb_envelope_t *ev = s_event("payment.failed", "ada@example.com", json_data);
    char *got = plugboard_template_render(api, ev, tmpl, esc);
    cr_assert_not_null(got);
    cr_expect_str_eq(got, want, "template \"%s\"", tmpl);
    api->free(got);
    pb_envelope_destroy(&ev);
}

static const char s_payment[] =
    "{\"customer\": {\"email\": \"ada@example.com\", \"name\": \"Ada\"},"
    " \"amount\": 1250, \"currency\": \"USD\", \"live\": true,"
    " \"ratio\": 0.5, \"tags\": [\"a\"]}";

TestSuite(template, .description = "plugboard_template_render");

Test(template, substitutes_fields_by_dotted_path)
{
    s_expect(s_payment, "Hi {{customer.name}} <{{customer.email}}>!",
             PLUGBOARD_ESCAPE_NONE, "Hi Ada <ada@example.com>!");
    s_expect(s_payment, "{{amount}} live={{live}}", PLUGBOARD_ESCAPE_NONE,
             "1250 live=true");
    s_expect(s_payment, "[{{ customer.name }}]", PLUGBOARD_ESCAPE_NONE,
             "[Ada]");
    s_expect(s_payment, "no tags at all", PLUGBOARD_ESCAPE_NONE,
             "no tags at all");
    s_expect(s_payment, "", PLUGBOARD_ESCAPE_NONE, "");
}

Test(template, missing_and_non_scalar_fields_render_empty)
{
    s_expect(s_payment, "[{{customer.phone}}][{{nope.deeper}}]",
             PLUGBOARD_ESCAPE_NONE, "[][]");
    s_expect(s_payment, "[{{customer}}][{{tags}}][{{ratio}}]",
             PLUGBOARD_ESCAPE_NONE, "[][][]");
}

Test(template, default_applies_only_when_empty)
{
    s_expect(s_payment, "Hi {{customer.nickname|default:there}},",
             PLUGBOARD_ESCAPE_NONE, "Hi there,");
    s_expect(s_payment, "Hi {{customer.name|default:there}},",
             PLUGBOARD_ESCAPE_NONE, "Hi Ada,");
    /* the default text is everything after "default:", '|' included */
    s_expect(s_payment, "{{x|default:a|b c}}", PLUGBOARD_ESCAPE_NONE, "a|b c");
    s_expect("{\"name\": \"\"}", "{{name|default:anonymous}}",
             PLUGBOARD_ESCAPE_NONE, "anonymous");
}

Test(template, money_uses_the_events_currency)
{
    s_expect(s_payment, "{{amount|money}}", PLUGBOARD_ESCAPE_NONE, "12.50 USD");
    s_expect("{\"amount\": 5, \"currency\": \"eur\"}", "{{amount|money}}",
             PLUGBOARD_ESCAPE_NONE, "0.05 EUR");
    s_expect("{\"amount\": -1999, \"currency\": \"GBP\"}", "{{amount|money}}",
             PLUGBOARD_ESCAPE_NONE, "-19.99 GBP");
    s_expect("{\"amount\": 0, \"currency\": \"USD\"}", "{{amount|money}}",
             PLUGBOARD_ESCAPE_NONE, "0.00 USD");
    s_expect("{\"amount\": 1250}", "{{amount|money}}", PLUGBOARD_ESCAPE_NONE,
             "12.50");
}

Test(template, money_knows_zero_and_three_decimal_currencies)
{
    s_expect("{\"amount\": 500, \"currency\": \"JPY\"}", "{{amount|money}}",
             PLUGBOARD_ESCAPE_NONE, "500 JPY");
    s_expect("{\"amount\": 12000, \"currency\": \"krw\"}", "{{amount|money}}",
             PLUGBOARD_ESCAPE_NONE, "12000 KRW");
    s_expect("{\"amount\": 1234, \"currency\": \"KWD\"}", "{{amount|money}}",
             PLUGBOARD_ESCAPE_NONE, "1.234 KWD");
}

Test(template, money_prefers_the_currency_beside_the_amount)
{
    s_expect("{\"currency\": \"USD\", \"amount\": 100,"
             " \"plan\": {\"amount\": 900, \"currency\": \"EUR\"},"
             " \"refund\": {\"amount\": 250}}",
             "{{plan.amount|money}} / {{refund.amount|money}}",
             PLUGBOARD_ESCAPE_NONE, "9.00 EUR / 2.50 USD");
}

Test(template, money_of_a_non_integer_is_missing)
{
    s_expect("{\"amount\": \"12.50\", \"currency\": \"USD\"}",
             "[{{amount|money}}]", PLUGBOARD_ESCAPE_NONE, "[]");
    s_expect(s_payment, "{{refund.amount|money|default:nothing}}",
             PLUGBOARD_ESCAPE_NONE, "nothing");
    s_expect(s_payment, "{{ amount | money | default:nothing }}",
             PLUGBOARD_ESCAPE_NONE, "12.50 USD");
}

Test(template, date_formats_utc_milliseconds)
{
    s_expect("{\"at\": 1714564800000}", "{{at|date}}", PLUGBOARD_ESCAPE_NONE,
             "2024-05-01 12:00 UTC");
    s_expect("{\"at\": \"yesterday\"}", "{{at|date|default:unknown}}",
             PLUGBOARD_ESCAPE_NONE, "unknown");
}

Test(template, duration_writes_milliseconds_as_the_config_does)
{
    s_expect("{\"a\": 30000, \"b\": 3600000, \"c\": 250, \"d\": 90000}",
             "{{a|duration}} {{b|duration}} {{c|duration}} {{d|duration}}",
             PLUGBOARD_ESCAPE_NONE, "30s 1h 250ms 90s");
    s_expect("{\"a\": \"soon\", \"b\": -5}",
             "{{a|duration|default:?}} {{b|duration|default:?}}",
             PLUGBOARD_ESCAPE_NONE, "? ?");
}

Test(template, envelope_fields)
{
    const plugboard_host_api_t *api = pb_host_api();
    pb_envelope_t *ev = s_event("payment.failed", "ada@example.com", s_payment);
    char *got = plugboard_template_render(
        api, ev,
        "{{$type}}|{{$id}}|{{$key}}|{{$source}}|{{$attempt}}|{{$time}}",
        PLUGBOARD_ESCAPE_NONE);
    char want[256];
    snprintf(want, sizeof want,
             "payment.failed|%s|ada@example.com|stripe|1|2024-05-01 12:00 UTC",
             pb_envelope_id(ev));
    cr_expect_str_eq(got, want);
    api->free(got);
    pb_envelope_destroy(&ev);
}

Test(template, unknown_filters_and_broken_tags_stay_literal)
{
    s_expect(s_payment, "{{amount|upper}}", PLUGBOARD_ESCAPE_NONE,
             "{{amount|upper}}");
    s_expect(s_payment, "{{amount|money|}}", PLUGBOARD_ESCAPE_NONE,
             "{{amount|money|}}");
    s_expect(s_payment, "{{$nope}}", PLUGBOARD_ESCAPE_NONE, "{{$nope}}");
    s_expect(s_payment, "a {{}} b {{ two words }}", PLUGBOARD_ESCAPE_NONE,
             "a {{}} b {{ two words }}");
    s_expect(s_payment, "Hi {{customer.name}}, {{customer.name",
             PLUGBOARD_ESCAPE_NONE, "Hi Ada, {{customer.name");
    s_expect(s_payment, "{ {{customer.name}} }", PLUGBOARD_ESCAPE_NONE,
             "{ Ada }");
}

Test(template, values_are_not_rendered_again)
{
    s_expect("{\"note\": \"{{amount}}\", \"amount\": 5}", "{{note}}",
             PLUGBOARD_ESCAPE_NONE, "{{amount}}");
}

static const char s_hostile[] =
    "{\"name\": \"Eve\\r\\nBcc: attacker@evil.example\","
    " \"ctl\": \"a\\tb\\u0001c\\u007fd\","
    " \"html\": \"<b>Tom & \\\"Jerry's\\\"</b>\"}";

Test(template, header_escape_blanks_line_breaks_and_controls)
{
    s_expect(s_hostile, "Subject: {{name}}", PLUGBOARD_ESCAPE_HEADER,
             "Subject: Eve  Bcc: attacker@evil.example");
    s_expect(s_hostile, "{{ctl}}", PLUGBOARD_ESCAPE_HEADER, "a b c d");
    s_expect(s_hostile, "{{missing|default:x\ny}}", PLUGBOARD_ESCAPE_HEADER,
             "x y");
    /* non-ASCII is left for the caller to encode */
    s_expect("{\"n\": \"Zo\\u00eb\"}", "{{n}}", PLUGBOARD_ESCAPE_HEADER,
             "Zo\xc3\xab");
}

Test(template, header_escape_blanks_embedded_nul)
{
    const plugboard_host_api_t *api = pb_host_api();
    pb_builder_t *b = pb_builder_new("stripe", "payment.failed");
    cr_assert_eq(pb_builder_set_string(b, "name", "a\0b", 3), 0);
    uint8_t *frame = NULL;
    size_t len = 0;
    cr_assert_eq(pb_builder_encode(b, &frame, &len), 0);
    pb_builder_destroy(&b);
    int err = 0;
    char why[128];
    pb_envelope_t *ev =
        pb_envelope_decode(frame, len, NULL, &err, why, sizeof why);
    free(frame);
    cr_assert_not_null(ev);
    char *got = plugboard_template_render(api, ev, "[{{name}}]",
                                          PLUGBOARD_ESCAPE_HEADER);
    cr_expect_str_eq(got, "[a b]");
    api->free(got);
    got =
        plugboard_template_render(api, ev, "[{{name}}]", PLUGBOARD_ESCAPE_NONE);
    cr_expect_str_eq(got, "[ab]");
    api->free(got);
    pb_envelope_destroy(&ev);
}

Test(template, html_escape_covers_values_not_the_template)
{
    s_expect(s_hostile, "<p>{{html}}</p>", PLUGBOARD_ESCAPE_HTML,
             "<p>&lt;b&gt;Tom &amp; &quot;Jerry&#39;s&quot;&lt;/b&gt;</p>");
    s_expect(s_hostile, "<p>{{html}}</p>", PLUGBOARD_ESCAPE_NONE,
             "<p><b>Tom & \"Jerry's\"</b></p>");
}

Test(template, none_keeps_line_breaks)
{
    s_expect(s_hostile, "{{name}}", PLUGBOARD_ESCAPE_NONE,
             "Eve\r\nBcc: attacker@evil.example");
}

Test(template, long_output_grows_the_buffer)
{
    char tmpl[16384];
    size_t o = 0;
    for (int i = 0; i < 500; i++)
        o += (size_t)snprintf(tmpl + o, sizeof tmpl - o, "{{amount|money}};");
    const plugboard_host_api_t *api = pb_host_api();
    pb_envelope_t *ev = s_event("payment.failed", NULL, s_payment);
    char *got = plugboard_template_render(api, ev, tmpl, PLUGBOARD_ESCAPE_NONE);
    cr_assert_not_null(got);
    cr_expect_eq(strlen(got), 500 * strlen("12.50 USD;"));
    cr_expect(strncmp(got, "12.50 USD;12.50 USD;", 20) == 0);
    api->free(got);
    pb_envelope_destroy(&ev);
}

Test(template, null_arguments_give_null)
{
    const plugboard_host_api_t *api = pb_host_api();
    cr_expect_null(
        plugboard_template_render(api, NULL, "x", PLUGBOARD_ESCAPE_NONE));
}

/* An allocator that fails after s_allocs_left successful calls. */
static int s_allocs_left;

static void *
s_failing_alloc(size_t size)
{
    if (s_allocs_left-- <= 0)
        return NULL;
    return pb_host_api()->alloc(size);
}

Test(template, out_of_memory_gives_null_and_frees_everything)
{
    plugboard_host_api_t api = *pb_host_api();
    api.alloc = s_failing_alloc;
    pb_envelope_t *ev = s_event("payment.failed", NULL, s_payment);
    char tmpl[4096];
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(tmpl + o, sizeof tmpl - o,
                              "{{customer.name}} {{amount|money}};");
    bool succeeded = false;
    for (int budget = 0; budget < 16 && !succeeded; budget++) {
        s_allocs_left = budget;
        char *got =
            plugboard_template_render(&api, ev, tmpl, PLUGBOARD_ESCAPE_NONE);
        if (got) {
            succeeded = true;
            cr_expect(strncmp(got, "Ada 12.50 USD;Ada 12.50 USD;", 28) == 0);
            api.free(got);
        }
    }
    cr_expect(succeeded, "renders once allocations succeed");
    pb_envelope_destroy(&ev);
}
