/* Strict, bounded JSON for the msb guest agent (see json.h). Reader and writer stay in one file
 * (~540 lines, over the ~500 guideline) because both use the same UTF-8 validator (utf8_len):
 * what the agent writes is checked by the code that checks what it reads. */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jblock {
	jblock *next;
	size_t used, cap;
	char data[];
};

typedef struct {
	const char *s, *end;
	const char *err;
	jblock **arena;
	size_t nodes;
	int depth;
} parser;

static void *arena_alloc(jblock **arena, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	jblock *b = *arena;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->cap = cap;
		b->used = 0;
		b->next = *arena;
		*arena = b;
	}
	void *p = b->data + b->used;
	b->used += n;
	return p;
}

void json_free(jblock *arena)
{
	while (arena) {
		jblock *n = arena->next;
		free(arena);
		arena = n;
	}
}

static jval *new_node(parser *p, enum jtype t)
{
	if (++p->nodes > JSON_MAX_NODES) {
		p->err = "too many JSON values";
		return NULL;
	}
	jval *v = arena_alloc(p->arena, sizeof(jval));
	if (!v) {
		p->err = "out of memory";
		return NULL;
	}
	memset(v, 0, sizeof(*v));
	v->type = t;
	return v;
}

static void skip_ws(parser *p)
{
	while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
		p->s++;
}

static int hex4(const char *s, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Length of a valid UTF-8 sequence at s (max n bytes), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return len;
}

static char *parse_string(parser *p, size_t *outlen)
{
	/* p->s points at the opening quote. The decoded form is never longer than the raw. */
	const char *q = ++p->s;
	while (q < p->end && *q != '"') {
		if (*q == '\\')
			q++;
		q++;
	}
	if (q >= p->end) {
		p->err = "unterminated string";
		return NULL;
	}
	char *out = arena_alloc(p->arena, (size_t)(q - p->s) + 1);
	if (!out) {
		p->err = "out of memory";
		return NULL;
	}
	size_t o = 0;
	while (p->s < q) {
		unsigned char c = (unsigned char)*p->s;
		if (c < 0x20) {
			p->err = "control character in string";
			return NULL;
		}
		if (c == '\\') {
			char e = p->s[1];
			p->s += 2;
			switch (e) {
			case '"': out[o++] = '"'; break;
			case '\\': out[o++] = '\\'; break;
			case '/': out[o++] = '/'; break;
			case 'b': out[o++] = '\b'; break;
			case 'f': out[o++] = '\f'; break;
			case 'n': out[o++] = '\n'; break;
			case 'r': out[o++] = '\r'; break;
			case 't': out[o++] = '\t'; break;
			case 'u': {
				unsigned cp, lo;
				if (q - p->s < 4 || hex4(p->s, &cp)) {
					p->err = "bad \\u escape";
					return NULL;
				}
				p->s += 4;
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					if (q - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u' || hex4(p->s + 2, &lo) ||
					    lo < 0xDC00 || lo > 0xDFFF) {
						p->err = "unpaired surrogate";
						return NULL;
					}
					p->s += 6;
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
					p->err = "unpaired surrogate";
					return NULL;
				}
				o += put_utf8(out + o, cp);
				break;
			}
			default:
				p->err = "bad escape";
				return NULL;
			}
			continue;
		}
		size_t l = utf8_len((const unsigned char *)p->s, (size_t)(q - p->s));
		if (!l) {
			p->err = "invalid UTF-8 in string";
			return NULL;
		}
		memcpy(out + o, p->s, l);
		o += l;
		p->s += l;
	}
	p->s = q + 1;
	out[o] = 0;
	*outlen = o;
	return out;
}

static jval *parse_value(parser *p);

static jval *parse_number(parser *p)
{
	const char *st = p->s;
	if (p->s < p->end && *p->s == '-')
		p->s++;
	if (p->s >= p->end) goto bad;
	if (*p->s == '0')
		p->s++;
	else if (*p->s >= '1' && *p->s <= '9')
		while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
	else
		goto bad;
	if (p->s < p->end && *p->s == '.') {
		p->s++;
		if (p->s >= p->end || *p->s < '0' || *p->s > '9') goto bad;
		while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
	}
	if (p->s < p->end && (*p->s == 'e' || *p->s == 'E')) {
		p->s++;
		if (p->s < p->end && (*p->s == '+' || *p->s == '-')) p->s++;
		if (p->s >= p->end || *p->s < '0' || *p->s > '9') goto bad;
		while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
	}
	if (p->s - st > 64) goto bad;
	char tmp[72];
	memcpy(tmp, st, (size_t)(p->s - st));
	tmp[p->s - st] = 0;
	jval *v = new_node(p, J_NUM);
	if (!v) return NULL;
	v->num = strtod(tmp, NULL);
	if (!isfinite(v->num)) goto bad;
	return v;
bad:
	p->err = "bad number";
	return NULL;
}

static int lit(parser *p, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n)) {
		p->err = "unexpected token";
		return 0;
	}
	p->s += n;
	return 1;
}

static jval *parse_container(parser *p, int obj)
{
	if (++p->depth > JSON_MAX_DEPTH) {
		p->err = "JSON nested too deeply";
		return NULL;
	}
	jval *v = new_node(p, obj ? J_OBJ : J_ARR), *last = NULL;
	if (!v) return NULL;
	p->s++;
	skip_ws(p);
	char close = obj ? '}' : ']';
	if (p->s < p->end && *p->s == close) {
		p->s++;
		p->depth--;
		return v;
	}
	for (;;) {
		char *key = NULL;
		size_t klen;
		skip_ws(p);
		if (obj) {
			if (p->s >= p->end || *p->s != '"') {
				p->err = "expected object key";
				return NULL;
			}
			if (!(key = parse_string(p, &klen))) return NULL;
			if (strlen(key) != klen) {
				p->err = "NUL in object key";
				return NULL;
			}
			skip_ws(p);
			if (p->s >= p->end || *p->s != ':') {
				p->err = "expected ':'";
				return NULL;
			}
			p->s++;
		}
		jval *c = parse_value(p);
		if (!c) return NULL;
		c->key = key;
		if (last) last->next = c; else v->child = c;
		last = c;
		v->len++;
		skip_ws(p);
		if (p->s < p->end && *p->s == ',') {
			p->s++;
			continue;
		}
		if (p->s < p->end && *p->s == close) {
			p->s++;
			p->depth--;
			return v;
		}
		p->err = obj ? "expected ',' or '}'" : "expected ',' or ']'";
		return NULL;
	}
}

static jval *parse_value(parser *p)
{
	skip_ws(p);
	if (p->s >= p->end) {
		p->err = "unexpected end of JSON";
		return NULL;
	}
	jval *v;
	switch (*p->s) {
	case '{': return parse_container(p, 1);
	case '[': return parse_container(p, 0);
	case '"': {
		size_t n;
		char *s = parse_string(p, &n);
		if (!s || !(v = new_node(p, J_STR))) return NULL;
		v->str = s;
		v->len = n;
		return v;
	}
	case 't':
		if (!lit(p, "true") || !(v = new_node(p, J_BOOL))) return NULL;
		v->b = 1;
		return v;
	case 'f':
		if (!lit(p, "false") || !(v = new_node(p, J_BOOL))) return NULL;
		return v;
	case 'n':
		if (!lit(p, "null")) return NULL;
		return new_node(p, J_NULL);
	default:
		return parse_number(p);
	}
}

jval *json_parse(const char *s, size_t n, const char **err, jblock **arena)
{
	parser p = { .s = s, .end = s + n, .arena = arena };
	*arena = NULL;
	jval *v = parse_value(&p);
	if (v) {
		skip_ws(&p);
		if (p.s != p.end) {
			p.err = "trailing data after JSON value";
			v = NULL;
		}
	}
	if (!v && err) *err = p.err ? p.err : "invalid JSON";
	return v;
}

const jval *json_get(const jval *obj, const char *key)
{
	if (!obj || obj->type != J_OBJ) return NULL;
	const jval *found = NULL;
	for (const jval *c = obj->child; c; c = c->next)
		if (!strcmp(c->key, key)) found = c; /* last one wins, like JSON.parse */
	return found;
}

int json_str(const jval *obj, const char *key, const char **out)
{
	const jval *v = json_get(obj, key);
	if (!v || v->type == J_NULL) return 0;
	if (v->type != J_STR || strlen(v->str) != v->len) return -1;
	*out = v->str;
	return 1;
}

int json_i64(const jval *obj, const char *key, int64_t *out)
{
	const jval *v = json_get(obj, key);
	if (!v || v->type == J_NULL) return 0;
	if (v->type != J_NUM || v->num != floor(v->num) || fabs(v->num) > 9007199254740992.0) return -1;
	*out = (int64_t)v->num;
	return 1;
}

int json_bool(const jval *obj, const char *key, int *out)
{
	const jval *v = json_get(obj, key);
	if (!v || v->type == J_NULL) return 0;
	if (v->type != J_BOOL) return -1;
	*out = v->b;
	return 1;
}

/* ---- writer ---- */

void jb_init(jbuf *jb, size_t limit)
{
	memset(jb, 0, sizeof(*jb));
	jb->limit = limit;
}

void jb_free(jbuf *jb)
{
	free(jb->buf);
	jb->buf = NULL;
}

void jb_raw(jbuf *jb, const char *s, size_t n)
{
	if (jb->err) return;
	if (jb->len + n + 1 > jb->limit) {
		jb->err = 1;
		return;
	}
	if (jb->len + n + 1 > jb->cap) {
		size_t cap = jb->cap ? jb->cap : 256;
		while (cap < jb->len + n + 1) cap *= 2;
		char *b = realloc(jb->buf, cap);
		if (!b) {
			jb->err = 1;
			return;
		}
		jb->buf = b;
		jb->cap = cap;
	}
	memcpy(jb->buf + jb->len, s, n);
	jb->len += n;
	jb->buf[jb->len] = 0;
}

static void sep(jbuf *jb)
{
	if (jb->need_comma) jb_raw(jb, ",", 1);
	jb->need_comma = 1;
}

void jb_obj(jbuf *jb) { sep(jb); jb_raw(jb, "{", 1); jb->need_comma = 0; }
void jb_end(jbuf *jb) { jb_raw(jb, "}", 1); jb->need_comma = 1; }
void jb_arr(jbuf *jb) { sep(jb); jb_raw(jb, "[", 1); jb->need_comma = 0; }
void jb_aend(jbuf *jb) { jb_raw(jb, "]", 1); jb->need_comma = 1; }

static void put_str(jbuf *jb, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	jb_raw(jb, "\"", 1);
	size_t i = 0, run = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[8];
		size_t l = 1;
		if (c == '"') esc = "\\\"";
		else if (c == '\\') esc = "\\\\";
		else if (c == '\n') esc = "\\n";
		else if (c == '\r') esc = "\\r";
		else if (c == '\t') esc = "\\t";
		else if (c < 0x20 || c == 0x7f) {
			memcpy(u, "\\u00", 4);
			u[4] = hex[c >> 4];
			u[5] = hex[c & 15];
			u[6] = 0;
			esc = u;
		} else if (c >= 0x80 && !(l = utf8_len((const unsigned char *)s + i, n - i))) {
			esc = "\\ufffd"; /* invalid UTF-8 (e.g. a file name): replacement char */
			l = 1;
		}
		if (esc) {
			jb_raw(jb, s + i - run, run);
			run = 0;
			jb_raw(jb, esc, strlen(esc));
			i += l;
		} else {
			run += l;
			i += l;
		}
	}
	jb_raw(jb, s + n - run, run);
	jb_raw(jb, "\"", 1);
}

void jb_key(jbuf *jb, const char *k)
{
	sep(jb);
	put_str(jb, k, strlen(k));
	jb_raw(jb, ":", 1);
	jb->need_comma = 0;
}

void jb_strn(jbuf *jb, const char *s, size_t n) { sep(jb); put_str(jb, s, n); }
void jb_str(jbuf *jb, const char *s) { jb_strn(jb, s, strlen(s)); }

void jb_i64(jbuf *jb, int64_t v)
{
	char t[32];
	sep(jb);
	jb_raw(jb, t, (size_t)snprintf(t, sizeof t, "%lld", (long long)v));
}

void jb_dbl(jbuf *jb, double v)
{
	char t[40];
	sep(jb);
	if (!isfinite(v)) v = 0;
	jb_raw(jb, t, (size_t)snprintf(t, sizeof t, "%.17g", v));
}

void jb_bool(jbuf *jb, int v) { sep(jb); jb_raw(jb, v ? "true" : "false", v ? 4 : 5); }
void jb_null(jbuf *jb) { sep(jb); jb_raw(jb, "null", 4); }
void jb_kstr(jbuf *jb, const char *k, const char *v) { jb_key(jb, k); jb_str(jb, v); }
void jb_ki64(jbuf *jb, const char *k, int64_t v) { jb_key(jb, k); jb_i64(jb, v); }
void jb_kbool(jbuf *jb, const char *k, int v) { jb_key(jb, k); jb_bool(jb, v); }
