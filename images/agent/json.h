/* Small, strict, bounded JSON reader and writer for the msb guest agent.
 * Written for this project: parses RFC 8259 JSON into an arena-allocated tree with hard
 * limits on depth and node count, and writes JSON into a growable buffer. */
#ifndef MSB_JSON_H
#define MSB_JSON_H

#include <stddef.h>
#include <stdint.h>

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jval jval;
struct jval {
	enum jtype type;
	int b;
	double num;
	char *str;     /* J_STR: NUL-terminated UTF-8 (may hold NUL bytes; len is exact) */
	size_t len;    /* J_STR: byte length; J_ARR/J_OBJ: number of children */
	char *key;     /* set when this value is an object member */
	jval *child;   /* first child (J_ARR/J_OBJ) */
	jval *next;    /* next sibling */
};

#define JSON_MAX_DEPTH 32
#define JSON_MAX_NODES 65536

/* Parses exactly one JSON value spanning the whole input. Returns NULL on error, with a
 * static description in *err. The tree lives in *arena (set even on error), which
 * json_free releases. */
typedef struct jblock jblock;
jval *json_parse(const char *s, size_t n, const char **err, jblock **arena);
void json_free(jblock *arena);

const jval *json_get(const jval *obj, const char *key);
/* Typed accessors: return 1 when present and of the right type, 0 when absent or null,
 * -1 when present with a wrong type. */
int json_str(const jval *obj, const char *key, const char **out);
int json_i64(const jval *obj, const char *key, int64_t *out);
int json_bool(const jval *obj, const char *key, int *out);

/* Writer. Out-of-memory or over-limit sets jb->err and later calls do nothing. */
typedef struct {
	char *buf;
	size_t len, cap, limit;
	int err;
	int need_comma;
} jbuf;

void jb_init(jbuf *jb, size_t limit);
void jb_free(jbuf *jb);
void jb_raw(jbuf *jb, const char *s, size_t n);
void jb_obj(jbuf *jb);   /* { */
void jb_end(jbuf *jb);   /* } */
void jb_arr(jbuf *jb);   /* [ */
void jb_aend(jbuf *jb);  /* ] */
void jb_key(jbuf *jb, const char *k);
void jb_str(jbuf *jb, const char *s);
void jb_strn(jbuf *jb, const char *s, size_t n);
void jb_i64(jbuf *jb, int64_t v);
void jb_dbl(jbuf *jb, double v);
void jb_bool(jbuf *jb, int v);
void jb_null(jbuf *jb);
/* Convenience: key + value. */
void jb_kstr(jbuf *jb, const char *k, const char *v);
void jb_ki64(jbuf *jb, const char *k, int64_t v);
void jb_kbool(jbuf *jb, const char *k, int v);

#endif
