/*
 * error.c - messages for the host's error codes.
 */
#include "error.h"

const char *
pb_strerror(int code)
{
    switch (code) {
#define PB_ERR_CASE(name, c, msg) \
    case (c):                     \
        return msg;
        PB_ERRNO_MAP(PB_ERR_CASE)
#undef PB_ERR_CASE
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}
