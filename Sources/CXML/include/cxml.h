#ifndef CTD_CXML_H
#define CTD_CXML_H

#include <stddef.h>

/// Events of one parse, handed to the caller's context. Names and text are UTF-8, not NUL-terminated for text.
/// A callback that returns non-zero stops the parse at once.
typedef struct {
    int (*start_element)(void *context, const char *name);
    int (*end_element)(void *context, const char *name);
    int (*text)(void *context, const char *bytes, int length);
    /// A well-formedness error on `line`; the parse stops after it.
    void (*error)(void *context, int line);
} ctd_xml_events;

/// Parses `length` bytes of UTF-8 XML with libxml2's SAX2 interface, with no network, no entity substitution, no
/// DTD loading, and the document's encoding declaration ignored. Returns 1 when the document was read to its end
/// and is well-formed, 0 otherwise (an error reported, or a callback stopped it). Each call has its own parser
/// context, so calls may run on any number of threads at once. `last_line` (may be NULL) receives the line the
/// parser ended on.
int ctd_xml_parse(const char *bytes, size_t length, const ctd_xml_events *events, void *context, int *last_line);

#endif
