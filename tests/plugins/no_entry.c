/*
 * no_entry.c - a test shared object that is not a plugboard connector: it
 * exports a function, but not plugboard_connector_entry, so the loader
 * must refuse it with a message naming the missing symbol.
 */

__attribute__((visibility("default"))) int
some_other_library_init(void)
{
    return 42;
}
