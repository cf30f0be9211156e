// libxml2's SAX2 parser behind a small interface: ctd decodes XML-RPC from these events (Sources/XMLRPC).
#include "cxml.h"

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#include <libxml/SAX2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const ctd_xml_events *events;
    void *context;
    xmlParserCtxtPtr parser;
    int failed;
} parse_state;

static void stop(parse_state *s) {
    s->failed = 1;
    xmlStopParser(s->parser);
}

/// Hands an element's name to `callback`. Namespaces are not processed: a prefixed name is reported whole
/// (`prefix:local`), as XML-RPC sees it.
static void report_element(parse_state *s, int (*callback)(void *, const char *), const xmlChar *localname,
                           const xmlChar *prefix) {
    if (s->failed) return;
    char name[512];
    const char *n = (const char *)localname;
    if (prefix != NULL) {
        snprintf(name, sizeof name, "%s:%s", (const char *)prefix, (const char *)localname);
        n = name;
    }
    if (callback(s->context, n)) stop(s);
}

static void on_start(void *data, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri,
                     int nb_namespaces, const xmlChar **namespaces, int nb_attributes, int nb_defaulted,
                     const xmlChar **attributes) {
    (void)uri; (void)nb_namespaces; (void)namespaces; (void)nb_attributes; (void)nb_defaulted; (void)attributes;
    parse_state *s = data;
    report_element(s, s->events->start_element, localname, prefix);
}

static void on_end(void *data, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri) {
    (void)uri;
    parse_state *s = data;
    report_element(s, s->events->end_element, localname, prefix);
}

static void on_text(void *data, const xmlChar *chars, int length) {
    parse_state *s = data;
    if (s->failed) return;
    if (s->events->text(s->context, (const char *)chars, length)) stop(s);
}

static void on_error(void *data, xmlErrorPtr error) {
    parse_state *s = data;
    // Namespace complaints (a prefix nobody declared) leave the document well-formed XML: XML-RPC ignores them.
    if (error == NULL || error->level < XML_ERR_ERROR || error->domain == XML_FROM_NAMESPACE || s->failed) return;
    s->events->error(s->context, error->line);
    stop(s);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init_library(void) { xmlInitParser(); }

int ctd_xml_parse(const char *bytes, size_t length, const ctd_xml_events *events, void *context, int *last_line) {
    pthread_once(&once, init_library);
    if (length > (size_t)INT32_MAX) return 0;

    xmlSAXHandler sax;
    memset(&sax, 0, sizeof sax);
    sax.initialized = XML_SAX2_MAGIC;
    sax.startElementNs = on_start;
    sax.endElementNs = on_end;
    sax.characters = on_text;
    sax.ignorableWhitespace = on_text;
    sax.cdataBlock = on_text;
    sax.serror = on_error;

    parse_state state = {events, context, NULL, 0};
    xmlParserCtxtPtr parser = xmlCreatePushParserCtxt(&sax, &state, NULL, 0, NULL);
    if (parser == NULL) return 0;
    state.parser = parser;
    xmlCtxtUseOptions(parser, XML_PARSE_NONET | XML_PARSE_IGNORE_ENC | XML_PARSE_NOWARNING | XML_PARSE_NOERROR);
    int rc = xmlParseChunk(parser, bytes, (int)length, 1);
    int ok = rc == 0 && parser->wellFormed && !state.failed;
    if (last_line != NULL) *last_line = xmlSAX2GetLineNumber(parser);
    // The parser holds its own copy of the handler, freed with it.
    xmlFreeParserCtxt(parser);
    return ok;
}
