/*
 * loader.h - loading connector plugins.
 *
 * A plugin is loaded from a private copy of its file in the run directory
 * (so replacing the installed .so, in place or by rename, never disturbs a
 * running copy), with dlopen(RTLD_NOW | RTLD_LOCAL).  The descriptor's ABI
 * version and size are checked and only the fields the host knows are
 * copied; a descriptor missing open or close, or with an invalid name or
 * settings table, is refused with a message naming what is wrong.
 */
#ifndef PB_LOADER_H
#define PB_LOADER_H

#include <stdbool.h>
#include <stddef.h>

#include <plugboard/plugboard.h>

typedef struct pb_plugin pb_plugin_t;

/*
 * Load a plugin.  name_or_path is a plugin name ("stripe", searched as
 * <dir>/<name>.so in search_path order) or a path containing '/'.
 * copy_dir is where the private copy goes (NULL loads the file directly).
 * Returns NULL and writes the reason to err.  Caller owns the result.
 */
pb_plugin_t *pb_plugin_load(const char *name_or_path,
                            const char *const *search_path,
                            size_t search_count, const char *copy_dir,
                            char *err, size_t err_len);

/*
 * The same, and with keep the private copy stays on disk until
 * pb_plugin_destroy (see pb_plugin_file): a process-isolated connector's
 * worker loads exactly the build the host loaded, whatever happens to
 * the installed file meanwhile.  Copies a host killed before it could
 * remove them are removed by a later load into the same copy_dir.
 */
pb_plugin_t *pb_plugin_load_kept(const char *name_or_path,
                                 const char *const *search_path,
                                 size_t search_count, const char *copy_dir,
                                 bool keep, char *err, size_t err_len);

/* Unload: only call when no thread can be inside the plugin. */
void pb_plugin_destroy(pb_plugin_t **plugin);

/* Forget a plugin without unloading its code, because a thread may still
 * run in it (a plugin that left threads running after close).  NULLs
 * *plugin. */
void pb_plugin_abandon(pb_plugin_t **plugin);

/* The host's copy of the descriptor; borrowed until destroy. */
const plugboard_connector_t *pb_plugin_descriptor(const pb_plugin_t *plugin);

/* The file the plugin was loaded from (not the private copy). */
const char *pb_plugin_path(const pb_plugin_t *plugin);

/* The file a worker process should load: the kept private copy, or the
 * path asked for when no copy was kept.  Borrowed until destroy. */
const char *pb_plugin_file(const pb_plugin_t *plugin);

#endif /* PB_LOADER_H */
