/*
 * error.h - the host's error codes and their messages.
 *
 * Every core function that can fail returns 0 or one of these negative
 * codes; constructors return NULL and describe the failure in a caller's
 * buffer.  The list is one X-macro so codes and messages cannot drift.
 */
#ifndef PB_ERROR_H
#define PB_ERROR_H

#define PB_ERRNO_MAP(X)                                                  \
    X(INVAL, -22, "invalid argument")                                    \
    X(NOMEM, -12, "out of memory")                                       \
    X(IO, -5, "input/output error")                                      \
    X(NOENT, -2, "not found")                                            \
    X(EXIST, -17, "already exists")                                      \
    X(RANGE, -34, "value out of range")                                  \
    X(PROTO, -71, "malformed message")                                   \
    X(TOOBIG, -27, "too large")                                          \
    X(BUSY, -16, "busy")                                                 \
    X(TIMEDOUT, -110, "timed out")                                       \
    X(STOPPING, -125, "shutting down")                                   \
    X(ABI, -1001, "plugin ABI mismatch")                                 \
    X(CONFIG, -1002, "invalid configuration")                            \
    X(JOURNAL, -1003, "journal error")                                   \
    X(FULL, -105, "queue full")

enum {
#define PB_ERR_ENUM(name, code, msg) PB_E##name = (code),
    PB_ERRNO_MAP(PB_ERR_ENUM)
#undef PB_ERR_ENUM
};

/* Message for a code from PB_ERRNO_MAP; "unknown error" for others.
 * Returns a static string. */
const char *pb_strerror(int code);

#endif /* PB_ERROR_H */
