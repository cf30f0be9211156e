// A small ctd client on the real xmlrpc-c C library (Debian: libxmlrpc-core-c3-dev), for test_xmlrpc_c.py.
//
//   xmlrpc_c_client URL USER LENGTH [--no-kill]      (the password is read from standard input, one line)
//
// Logs in, calls view(session, {}, "orig_port_src", "DESC", 0, LENGTH), reads every member of the page and of each
// connection with the type the API documents (a member of another type, an unknown or a missing member is an
// error), then kills the first connection by its id sent as a string, and logs out. xmlrpc-c's own limits stay at
// their defaults (512 KiB of response XML, 64 levels of nesting): that is what the test is about.
//
// Prints one JSON object on standard output and exits 0; on a fault (from ctd or from xmlrpc-c itself, e.g. -509
// for a response over 512 KiB) prints {"fault_code": C, "fault_string": S, "during": ...} instead, a line on
// standard error, and exits 3. A well-formed response with a member of the wrong type or shape exits 4; bad usage 2.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xmlrpc-c/base.h>
#include <xmlrpc-c/client.h>

static xmlrpc_env env;
static int summary_started;  // part of the summary line is on stdout already

static void json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

// Exits 3 with the fault if the last xmlrpc-c operation failed.
static void check(const char *fmt, ...) {
    if (!env.fault_occurred) return;
    char during[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(during, sizeof during, fmt, ap);
    va_end(ap);
    fprintf(stderr, "xmlrpc_c_client: %s: fault %d: %s\n", during, env.fault_code,
            env.fault_string ? env.fault_string : "");
    if (summary_started) printf("\n");  // the fault is always the last line
    printf("{\"fault_code\": %d, \"fault_string\": ", env.fault_code);
    json_string(env.fault_string ? env.fault_string : "");
    printf(", \"during\": ");
    json_string(during);
    printf("}\n");
    exit(3);
}

// Exits 4: the response was read but does not have the documented shape.
static void bad_shape(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "xmlrpc_c_client: unexpected response: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(4);
}

// A double as a JSON number that always reads back as a float (0.0, not 0).
static void print_double(double d) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", d);
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    fputs(buf, stdout);
}

static const char *type_name(xmlrpc_type t) {
    switch (t) {
    case XMLRPC_TYPE_INT: return "int";
    case XMLRPC_TYPE_BOOL: return "boolean";
    case XMLRPC_TYPE_DOUBLE: return "double";
    case XMLRPC_TYPE_DATETIME: return "dateTime.iso8601";
    case XMLRPC_TYPE_STRING: return "string";
    case XMLRPC_TYPE_BASE64: return "base64";
    case XMLRPC_TYPE_ARRAY: return "array";
    case XMLRPC_TYPE_STRUCT: return "struct";
    case XMLRPC_TYPE_C_PTR: return "C pointer";
    case XMLRPC_TYPE_NIL: return "nil";
    case XMLRPC_TYPE_I8: return "i8";
    default: return "unknown";
    }
}

static void expect_type(xmlrpc_value *v, xmlrpc_type want, const char *what) {
    xmlrpc_type got = xmlrpc_value_type(v);
    if (got != want) bad_shape("%s is %s, expected %s", what, type_name(got), type_name(want));
}

// The members of a connection and their types (README, API reference: view).
enum kind { K_STRING, K_INT, K_DOUBLE, K_STRING_ARRAY };
struct member {
    const char *name;
    enum kind kind;
    int required;
};
static const struct member CONNECTION_MEMBERS[] = {
    {"id", K_STRING, 1},           {"l3proto", K_STRING, 1},      {"l3proto_num", K_INT, 1},
    {"l4proto", K_STRING, 1},      {"l4proto_num", K_INT, 1},     {"orig_src", K_STRING, 1},
    {"orig_dst", K_STRING, 1},     {"orig_port_src", K_INT, 1},   {"orig_port_dst", K_INT, 1},
    {"repl_src", K_STRING, 1},     {"repl_dst", K_STRING, 1},     {"repl_port_src", K_INT, 1},
    {"repl_port_dst", K_INT, 1},   {"mark", K_INT, 1},            {"timeout", K_INT, 1},
    {"status", K_INT, 1},          {"status_flags", K_STRING_ARRAY, 1}, {"state", K_STRING, 1},
    {"zone", K_INT, 1},            {"orig_bytes", K_DOUBLE, 1},   {"orig_packets", K_DOUBLE, 1},
    {"repl_bytes", K_DOUBLE, 1},   {"repl_packets", K_DOUBLE, 1}, {"byte_rate", K_DOUBLE, 1},
    {"icmp_type", K_INT, 0},       {"icmp_code", K_INT, 0},       {"icmp_id", K_INT, 0},
    {"orig_l4proto", K_INT, 1},    {"orig_ipv4_src", K_INT, 0},   {"orig_ipv4_dst", K_INT, 0},
    {"start", K_DOUBLE, 0},        {"age", K_INT, 0},             {"labels", K_STRING_ARRAY, 1},
    {"helper", K_STRING, 1},
};
#define N_MEMBERS (sizeof CONNECTION_MEMBERS / sizeof CONNECTION_MEMBERS[0])

// Reads one connection; prints it as a JSON object when print is set. Stores its id in id_out (malloc'd).
static void read_connection(xmlrpc_value *conn, int index, int print, char **id_out, int *ipv6_out) {
    char what[160];
    snprintf(what, sizeof what, "connection %d", index);
    expect_type(conn, XMLRPC_TYPE_STRUCT, what);
    int seen[N_MEMBERS] = {0};
    int size = xmlrpc_struct_size(&env, conn);
    check("size of connection %d", index);
    if (print) printf("{");
    for (int m = 0; m < size; m++) {
        xmlrpc_value *key, *value;
        xmlrpc_struct_read_member(&env, conn, (unsigned)m, &key, &value);
        check("member %d of connection %d", m, index);
        const char *name;
        xmlrpc_read_string(&env, key, &name);
        check("name of member %d of connection %d", m, index);
        size_t k;
        for (k = 0; k < N_MEMBERS && strcmp(CONNECTION_MEMBERS[k].name, name) != 0; k++) {}
        if (k == N_MEMBERS) bad_shape("connection %d has an undocumented member '%s'", index, name);
        if (seen[k]++) bad_shape("connection %d has member '%s' twice", index, name);
        snprintf(what, sizeof what, "member '%s' of connection %d", name, index);
        if (print) {
            if (m > 0) printf(", ");
            json_string(name);
            printf(": ");
        }
        switch (CONNECTION_MEMBERS[k].kind) {
        case K_STRING: {
            expect_type(value, XMLRPC_TYPE_STRING, what);
            const char *s;
            xmlrpc_read_string(&env, value, &s);
            check("reading %s", what);
            if (print) json_string(s);
            if (strcmp(name, "id") == 0) *id_out = strdup(s);
            if (strcmp(name, "l3proto") == 0) *ipv6_out = strcmp(s, "ipv6") == 0;
            free((void *)s);
            break;
        }
        case K_INT: {
            expect_type(value, XMLRPC_TYPE_INT, what);
            int i;
            xmlrpc_read_int(&env, value, &i);
            check("reading %s", what);
            if (print) printf("%d", i);
            break;
        }
        case K_DOUBLE: {
            expect_type(value, XMLRPC_TYPE_DOUBLE, what);
            double d;
            xmlrpc_read_double(&env, value, &d);
            check("reading %s", what);
            if (print) print_double(d);
            break;
        }
        case K_STRING_ARRAY: {
            expect_type(value, XMLRPC_TYPE_ARRAY, what);
            int n = xmlrpc_array_size(&env, value);
            check("size of %s", what);
            if (print) printf("[");
            for (int j = 0; j < n; j++) {
                xmlrpc_value *item;
                xmlrpc_array_read_item(&env, value, j, &item);
                check("item %d of %s", j, what);
                expect_type(item, XMLRPC_TYPE_STRING, what);
                const char *s;
                xmlrpc_read_string(&env, item, &s);
                check("item %d of %s", j, what);
                if (print) {
                    if (j > 0) printf(", ");
                    json_string(s);
                }
                free((void *)s);
                xmlrpc_DECREF(item);
            }
            if (print) printf("]");
            break;
        }
        }
        free((void *)name);
        xmlrpc_DECREF(key);
        xmlrpc_DECREF(value);
    }
    for (size_t k = 0; k < N_MEMBERS; k++)
        if (CONNECTION_MEMBERS[k].required && !seen[k])
            bad_shape("connection %d has no member '%s'", index, CONNECTION_MEMBERS[k].name);
    if (print) printf("}");
}

static int read_int_member(xmlrpc_value *s, const char *name, const char *of) {
    char what[128];
    snprintf(what, sizeof what, "member '%s' of %s", name, of);
    xmlrpc_value *v;
    xmlrpc_struct_read_value(&env, s, name, &v);
    check("reading %s", what);
    expect_type(v, XMLRPC_TYPE_INT, what);
    int i;
    xmlrpc_read_int(&env, v, &i);
    check("reading %s", what);
    xmlrpc_DECREF(v);
    return i;
}

// Prints "name": [strings...] for an array-of-strings member; returns its size.
static int print_string_array_member(xmlrpc_value *s, const char *name, const char *of) {
    char what[128];
    snprintf(what, sizeof what, "member '%s' of %s", name, of);
    xmlrpc_value *v;
    xmlrpc_struct_read_value(&env, s, name, &v);
    check("reading %s", what);
    expect_type(v, XMLRPC_TYPE_ARRAY, what);
    int n = xmlrpc_array_size(&env, v);
    check("size of %s", what);
    printf(", ");
    json_string(name);
    printf(": [");
    for (int j = 0; j < n; j++) {
        xmlrpc_value *item;
        xmlrpc_array_read_item(&env, v, j, &item);
        check("item %d of %s", j, what);
        expect_type(item, XMLRPC_TYPE_STRING, what);
        const char *str;
        xmlrpc_read_string(&env, item, &str);
        check("item %d of %s", j, what);
        if (j > 0) printf(", ");
        json_string(str);
        free((void *)str);
        xmlrpc_DECREF(item);
    }
    printf("]");
    xmlrpc_DECREF(v);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "--no-kill") != 0)) {
        fprintf(stderr, "usage: xmlrpc_c_client URL USER LENGTH [--no-kill]   (password on standard input)\n");
        return 2;
    }
    const char *url = argv[1], *user = argv[2];
    char *end;
    long length = strtol(argv[3], &end, 10);
    if (*end || length < 0 || length > 1000000) {
        fprintf(stderr, "xmlrpc_c_client: bad LENGTH %s\n", argv[3]);
        return 2;
    }
    int do_kill = argc == 4;
    char password[4096];
    if (!fgets(password, sizeof password, stdin)) {
        fprintf(stderr, "xmlrpc_c_client: no password on standard input\n");
        return 2;
    }
    password[strcspn(password, "\r\n")] = '\0';

    xmlrpc_env_init(&env);
    xmlrpc_client_setup_global_const(&env);
    check("setting up xmlrpc-c");
    struct xmlrpc_curl_xportparms curl;
    memset(&curl, 0, sizeof curl);
    curl.timeout = 20000;  // milliseconds
    struct xmlrpc_clientparms parms;
    memset(&parms, 0, sizeof parms);
    parms.transport = "curl";
    parms.transportparmsP = &curl;
    parms.transportparm_size = XMLRPC_CXPSIZE(timeout);
    xmlrpc_client *client;
    xmlrpc_client_create(&env, XMLRPC_CLIENT_NO_FLAGS, "ctd-e2e-xmlrpc-c", "1.0", &parms, XMLRPC_CPSIZE(transportparm_size),
                         &client);
    check("creating the client");

    unsigned major, minor, point;
    xmlrpc_client_version(&major, &minor, &point);

    // login(user, password) -> string
    xmlrpc_value *r;
    xmlrpc_client_call2f(&env, client, url, "login", &r, "(ss)", user, password);
    memset(password, 0, sizeof password);
    check("login");
    expect_type(r, XMLRPC_TYPE_STRING, "the result of login");
    const char *session;
    xmlrpc_read_string(&env, r, &session);
    check("reading the session id");
    xmlrpc_DECREF(r);

    // view(session, {}, "orig_port_src", "DESC", 0, length) -> struct (the int parameters go out as <i4>)
    xmlrpc_value *page;
    xmlrpc_client_call2f(&env, client, url, "view", &page, "(s{}ssii)", session, "orig_port_src", "DESC", 0,
                         (xmlrpc_int32)length);
    check("view");
    expect_type(page, XMLRPC_TYPE_STRUCT, "the result of view");

    summary_started = 1;
    printf("{\"xmlrpc_c_version\": \"%u.%u.%u\", \"xml_size_limit\": %zu, \"nesting_limit\": %zu", major, minor,
           point, xmlrpc_limit_get(XMLRPC_XML_SIZE_LIMIT_ID), xmlrpc_limit_get(XMLRPC_NESTING_LIMIT_ID));
    printf(", \"session_length\": %zu", strlen(session));
    printf(", \"total\": %d", read_int_member(page, "total", "the page"));
    printf(", \"start\": %d", read_int_member(page, "start", "the page"));
    printf(", \"length\": %d", read_int_member(page, "length", "the page"));

    // The other members of the page, each with its documented type.
    int page_size = xmlrpc_struct_size(&env, page);
    check("size of the page");
    xmlrpc_value *conns = NULL;
    for (int m = 0; m < page_size; m++) {
        xmlrpc_value *key, *value;
        xmlrpc_struct_read_member(&env, page, (unsigned)m, &key, &value);
        check("member %d of the page", m);
        const char *name;
        xmlrpc_read_string(&env, key, &name);
        check("name of member %d of the page", m);
        char what[128];
        snprintf(what, sizeof what, "member '%s' of the page", name);
        if (!strcmp(name, "total") || !strcmp(name, "start") || !strcmp(name, "length")) {
            // read above
        } else if (!strcmp(name, "connections")) {
            expect_type(value, XMLRPC_TYPE_ARRAY, what);
            conns = value;
            xmlrpc_INCREF(conns);
        } else if (!strcmp(name, "generation") || !strcmp(name, "note")) {
            expect_type(value, XMLRPC_TYPE_STRING, what);
            const char *s;
            xmlrpc_read_string(&env, value, &s);
            check("reading %s", what);
            printf(", ");
            json_string(name);
            printf(": ");
            json_string(s);
            free((void *)s);
        } else if (!strcmp(name, "time")) {
            expect_type(value, XMLRPC_TYPE_DOUBLE, what);
            double d;
            xmlrpc_read_double(&env, value, &d);
            check("reading %s", what);
            printf(", \"time\": ");
            print_double(d);
        } else if (!strcmp(name, "autorefresh") || !strcmp(name, "accounting") || !strcmp(name, "timestamps")) {
            expect_type(value, XMLRPC_TYPE_BOOL, what);
            xmlrpc_bool b;
            xmlrpc_read_bool(&env, value, &b);
            check("reading %s", what);
            printf(", \"%s\": %s", name, b ? "true" : "false");
        } else {
            bad_shape("the page has an undocumented member '%s'", name);
        }
        free((void *)name);
        xmlrpc_DECREF(key);
        xmlrpc_DECREF(value);
    }
    if (!conns) bad_shape("the page has no member 'connections'");

    int count = xmlrpc_array_size(&env, conns);
    check("size of connections");
    printf(", \"count\": %d", count);
    char **ids = calloc((size_t)count + 1, sizeof *ids);
    int ipv6 = 0;
    if (count > 0) printf(", \"first\": ");
    for (int i = 0; i < count; i++) {
        xmlrpc_value *conn;
        xmlrpc_array_read_item(&env, conns, i, &conn);
        check("connection %d", i);
        int is6 = 0;
        read_connection(conn, i, i == 0, &ids[i], &is6);
        ipv6 += is6;
        xmlrpc_DECREF(conn);
    }
    printf(", \"ipv6\": %d, \"ids\": [", ipv6);
    for (int i = 0; i < count; i++) {
        if (i > 0) printf(", ");
        json_string(ids[i]);
    }
    printf("]");
    if (count > 0) {
        printf(", \"first_id\": ");
        json_string(ids[0]);
    }
    xmlrpc_DECREF(conns);
    xmlrpc_DECREF(page);
    fflush(stdout);

    // kill(session, [first id as a string]) -> {killed, killed_ids, not_found, ambiguous, failed}
    if (do_kill && count > 0) {
        xmlrpc_value *k;
        xmlrpc_client_call2f(&env, client, url, "kill", &k, "(s(s))", session, ids[0]);
        check("kill");
        expect_type(k, XMLRPC_TYPE_STRUCT, "the result of kill");
        printf(", \"killed\": %d", read_int_member(k, "killed", "the result of kill"));
        print_string_array_member(k, "killed_ids", "the result of kill");
        print_string_array_member(k, "not_found", "the result of kill");
        print_string_array_member(k, "ambiguous", "the result of kill");
        print_string_array_member(k, "failed", "the result of kill");
        xmlrpc_DECREF(k);
    }

    // logout(session) -> boolean
    xmlrpc_client_call2f(&env, client, url, "logout", &r, "(s)", session);
    check("logout");
    expect_type(r, XMLRPC_TYPE_BOOL, "the result of logout");
    xmlrpc_bool out;
    xmlrpc_read_bool(&env, r, &out);
    check("reading the result of logout");
    xmlrpc_DECREF(r);
    printf(", \"logout\": %s}\n", out ? "true" : "false");

    for (int i = 0; i < count; i++) free(ids[i]);
    free(ids);
    free((void *)session);
    xmlrpc_client_destroy(client);
    xmlrpc_client_teardown_global_const();
    xmlrpc_env_clean(&env);
    return 0;
}
