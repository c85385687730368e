/* ustr.h — Python 3 str semantics on UTF-8 C strings (prefix ad_): len, isspace, strip / lstrip /
 * rstrip, lower and capitalize, as lm-evaluation-harness runs them on its prompts.
 *
 * Sources: CPython 3.11 Objects/unicodeobject.c (do_capitalize, do_lower, lower_ucs4,
 * handle_capital_sigma, _PyUnicode_XStrip) and Objects/unicodectype.c (_PyUnicode_IsWhitespace:
 * bidirectional class WS, B or S, or category Zs; _PyUnicode_ToTitleFull / _PyUnicode_ToLowerFull:
 * UnicodeData simple mappings overridden by SpecialCasing.txt's unconditional full mappings;
 * _PyUnicode_IsCased / _PyUnicode_IsCaseIgnorable: DerivedCoreProperties Cased, Case_Ignorable).
 * Simple case mappings and bidi classes come from libutf8proc; the full (multi-character) title and
 * lower mappings and the Cased / Case_Ignorable sets are tables in ustr.c generated from Python 3.11
 * (Unicode 14.0) itself.
 *
 * Invalid UTF-8: text is decoded as Python's bytes.decode("utf-8", "surrogateescape") would do it.
 * A byte that does not start a well-formed sequence (a lone continuation byte, C0/C1/F5..FF, a
 * truncated sequence, an overlong form, an encoded surrogate U+D800..U+DFFF, a value above U+10FFFF)
 * is one character of its own, U+DC80..U+DCFF (0xDC00 + byte): not whitespace, neither cased nor
 * case-ignorable, without case mappings, and written back as the same byte. So nothing crashes, such
 * bytes are never stripped or case-mapped, and every valid character around them behaves as in
 * Python; the data loaders reject invalid UTF-8 before it gets here (see ad_u8_check).
 * All functions take NUL-terminated strings or (pointer, byte length) pairs; none keeps state. */
#ifndef APEX4_AD_USTR_H
#define APEX4_AD_USTR_H

#include <stddef.h>
#include <stdint.h>

/* Decode one character of s[0..n) (n >= 1). Returns its code point and sets *len (1..4 bytes); an
 * invalid byte returns 0xDC00 + byte with *len = 1 (surrogateescape, see above). */
uint32_t ad_u8_decode(const char *s, size_t n, int *len);

/* Offset of the first byte of s[0..n) that is not part of well-formed UTF-8 (Python's strict
 * decoder rules), or (size_t)-1 when all of it is valid. */
size_t ad_u8_check(const char *s, size_t n);

/* Number of characters (Python len() of the decoded str; each invalid byte counts one). */
size_t ad_utf8_len(const char *text);

/* Python str.isspace() for one character: U+0009..U+000D, U+001C..U+001F, U+0020, U+0085, U+00A0,
 * U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. */
int ad_u_isspace(uint32_t c);

/* Byte length of s[0..n) after Python's rstrip() (no argument): trailing whitespace removed. */
size_t ad_py_rstrip_len(const char *s, size_t n);
/* Byte offset of the first non-whitespace character of s[0..n) (Python lstrip()); n if none. */
size_t ad_py_lstrip_off(const char *s, size_t n);

/* Python str.strip() / lstrip() / rstrip() (no argument) into a new malloc'd string; NULL when out
 * of memory. */
char *ad_py_strip(const char *text);
char *ad_py_lstrip(const char *text);
char *ad_py_rstrip(const char *text);

/* Python str.lower(): full lowercase mapping ('İ' -> "i\u0307") with the Greek final-sigma rule
 * (U+03A3 becomes U+03C2 after a cased character and not before one, case-ignorables skipped).
 * Returns a malloc'd string or NULL (out of memory). */
char *ad_py_lower(const char *text);

/* Python str.capitalize() (3.8+): the first character to its full titlecase mapping ('ß' -> "Ss",
 * 'ǆ' -> 'ǅ'), the rest as str.lower() does (final sigma included). Returns a malloc'd string or
 * NULL (out of memory). */
char *ad_py_capitalize(const char *text);

#endif
