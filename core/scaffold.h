/*
 * scaffold.h - `plugboard new-connector`: write a new connector project.
 *
 * The project comes from sdk/templates/, compiled into the binary
 * (core/embedded.h), so the command needs no data files.  It builds out of
 * the tree against the installed SDK: CMakeLists.txt (find_package
 * (plugboard), pkg-config as the fallback), the connector source with every
 * callback stubbed to a clear "not supported" answer, a README skeleton and
 * a Criterion test using the SDK harness.  Existing files are never
 * overwritten.
 */
#ifndef PB_SCAFFOLD_H
#define PB_SCAFFOLD_H

#include <stddef.h>
#include <stdio.h>

/*
 * Write the scaffold for connector name into dir (created as needed; NULL
 * means ./<name>).  name is [a-z][a-z0-9_-]{0,62}.  Nothing is written
 * when any target file exists.  Each file written is named on report (may
 * be NULL).  Returns 0, PB_EINVAL (bad name), PB_EEXIST (a file is in the
 * way) or PB_EIO, with the reason in err.
 */
int pb_scaffold_write(const char *name, const char *dir, FILE *report,
                      char *err, size_t err_len);

/* The command: plugboard new-connector NAME [DIR]. */
int pb_scaffold_cmd(int argc, char **argv);

/* Its --help text. */
extern const char pb_scaffold_help[];

#endif /* PB_SCAFFOLD_H */
