/*
 * errors.c - plugboard_strerror (plugboard/helpers.h): the messages of
 * the codes host API calls return to a connector.
 */
#include <plugboard/helpers.h>

const char *
plugboard_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case PLUGBOARD_E_INVALID:
        return "invalid argument or event";
    case PLUGBOARD_E_NOMEM:
        return "out of memory";
    case PLUGBOARD_E_STOPPING:
        return "the host is stopping";
    case PLUGBOARD_E_FULL:
        return "too many events emitted in one call";
    case PLUGBOARD_E_TOOBIG:
        return "value too large for an event";
    case PLUGBOARD_E_REFUSED:
        return "the journal did not take the batch";
    case PLUGBOARD_E_UNKNOWN:
        return "the batch's fate is no longer known";
    default:
        return "unknown error";
    }
}
