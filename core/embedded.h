/*
 * embedded.h - files compiled into the binary at build time
 * (cmake/embed.cmake): the canonical event examples of docs/events.md and
 * the new-connector scaffold of sdk/templates/.  Nothing here reads a file
 * at run time.
 */
#ifndef PB_EMBEDDED_H
#define PB_EMBEDDED_H

#include <stddef.h>

typedef struct pb_embedded {
    const char *path; /* relative to the directory it was taken from */
    const char *data; /* len bytes, then a NUL */
    size_t len;
} pb_embedded_t;

/* docs/events.md, as "events.md"; ends with {NULL, NULL, 0}. */
extern const pb_embedded_t pb_embedded_docs[];

/* Every file under sdk/templates/; ends with {NULL, NULL, 0}. */
extern const pb_embedded_t pb_embedded_templates[];

#endif /* PB_EMBEDDED_H */
