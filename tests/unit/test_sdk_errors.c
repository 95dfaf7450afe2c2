/*
 * test_sdk_errors.c - plugboard_strerror (plugboard/helpers.h): every
 * code the host API returns to a connector has its own message.
 */
#include <string.h>

#include <criterion/criterion.h>

#include <plugboard/helpers.h>

Test(sdk_errors, every_host_api_code_has_its_message)
{
    cr_expect_str_eq(plugboard_strerror(0), "success");
    cr_expect_str_eq(plugboard_strerror(PLUGBOARD_E_INVALID),
                     "invalid argument or event");
    cr_expect_str_eq(plugboard_strerror(PLUGBOARD_E_NOMEM), "out of memory");
    cr_expect_str_eq(plugboard_strerror(PLUGBOARD_E_STOPPING),
                     "the host is stopping");
    cr_expect_str_eq(plugboard_strerror(PLUGBOARD_E_FULL),
                     "too many events emitted in one call");
    cr_expect_str_eq(plugboard_strerror(PLUGBOARD_E_TOOBIG),
                     "value too large for an event");
}

Test(sdk_errors, unknown_codes_say_so)
{
    cr_expect_str_eq(plugboard_strerror(-1), "unknown error");
    cr_expect_str_eq(plugboard_strerror(42), "unknown error");
    cr_expect_str_eq(plugboard_strerror(-2147483647 - 1), "unknown error");
}
