/* test_unicode.c — Python str semantics on UTF-8 (datasets/ustr.h) and UTF-8 checks of the data
 * loaders (datasets/wikitext.c). Every expectation below was produced by Python 3.11 itself, e.g.
 *   python3 -c "s = '\xa0\u3000 x y\u2028\x85'; print(repr(s.strip()), s.strip().encode().hex())"
 * and, for invalid UTF-8, with the bytes decoded as b.decode('utf-8', 'surrogateescape') and the
 * result encoded back the same way (the documented semantics of ustr.h). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "testutil.h"
#include "ustr.h"
#include "wikitext.h"

typedef char *(*str_fn)(const char *);

static void expect_fn(str_fn f, const char *name, const char *in, const char *want) {
    char *got = f(in);
    cr_assert_not_null(got);
    cr_expect_str_eq(got, want, "%s(\"%s\")", name, in);
    free(got);
}

/* python3 -c "print([hex(c) for c in range(0x110000) if chr(c).isspace()])" */
static const unsigned py_space[] = {0x9,    0xa,    0xb,    0xc,    0xd,    0x1c,   0x1d,   0x1e,
                                    0x1f,   0x20,   0x85,   0xa0,   0x1680, 0x2000, 0x2001, 0x2002,
                                    0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
                                    0x2028, 0x2029, 0x202f, 0x205f, 0x3000};

Test(unicode, isspace_matches_python_on_every_code_point) {
    size_t k = 0, n = sizeof py_space / sizeof py_space[0];
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        int want = k < n && py_space[k] == c;
        if (want) k++;
        if (ad_u_isspace(c) != want) cr_assert_fail("U+%04X: isspace %d, Python %d", c, !want, want);
    }
    cr_expect_eq(k, n);
    cr_expect_eq(ad_u_isspace(0xDC80), 0, "an escaped invalid byte is not whitespace");
}

Test(unicode, strip_lstrip_rstrip) {
    /* '\xa0\u3000 x y\u2028\x85': strip 'x y', lstrip 'x y\u2028\x85', rstrip '\xa0\u3000 x y' */
    const char *s = "\xc2\xa0\xe3\x80\x80 x y\xe2\x80\xa8\xc2\x85";
    expect_fn(ad_py_strip, "strip", s, "x y");
    expect_fn(ad_py_lstrip, "lstrip", s, "x y\xe2\x80\xa8\xc2\x85");
    expect_fn(ad_py_rstrip, "rstrip", s, "\xc2\xa0\xe3\x80\x80 x y");
    /* '\x1c\x1d\x1e\x1fa b\x0b\x0c'.strip() == 'a b' (FS..US are whitespace to Python) */
    expect_fn(ad_py_strip, "strip", "\x1c\x1d\x1e\x1f" "a b\x0b\x0c", "a b");
    /* U+200B (zero width space), U+180E (Mongolian vowel separator), U+FEFF are NOT whitespace */
    expect_fn(ad_py_strip, "strip", "\xe2\x80\x8bx\xe2\x80\x8b", "\xe2\x80\x8bx\xe2\x80\x8b");
    expect_fn(ad_py_strip, "strip", "\xe1\xa0\x8ex", "\xe1\xa0\x8ex");
    expect_fn(ad_py_strip, "strip", "\xef\xbb\xbfx", "\xef\xbb\xbfx");
    expect_fn(ad_py_strip, "strip", " \t\n", "");
    expect_fn(ad_py_strip, "strip", "", "");
    /* byte-level helpers used by the _encode_pair split */
    cr_expect_eq(ad_py_rstrip_len("ab\xc2\xa0", 4), 2);
    cr_expect_eq(ad_py_rstrip_len("ab\xe3\x80\x80 \xc2\x85", 8), 2);
    cr_expect_eq(ad_py_lstrip_off("\xe2\x80\xa9z", 4), 3);
    cr_expect_eq(ad_py_lstrip_off("  ", 2), 2);
}

Test(unicode, capitalize_full_case_mappings) {
    expect_fn(ad_py_capitalize, "capitalize", "\xc3\x9f" "a", "Ssa");                  /* 'ßa' -> 'Ssa' */
    expect_fn(ad_py_capitalize, "capitalize", "\xc7\x86" "emal", "\xc7\x85" "emal");   /* 'ǆemal' -> 'ǅemal' */
    expect_fn(ad_py_capitalize, "capitalize", "\xc3\xa9lan VITAL", "\xc3\x89lan vital"); /* 'Élan vital' */
    /* 'hELLO İSTANBUL' -> 'Hello i̇stanbul' (İ lowers to i + U+0307) */
    expect_fn(ad_py_capitalize, "capitalize", "hELLO \xc4\xb0STANBUL", "Hello i\xcc\x87stanbul");
    expect_fn(ad_py_capitalize, "capitalize", "\xef\xac\x81ne", "Fine");               /* 'ﬁne' -> 'Fine' */
    expect_fn(ad_py_capitalize, "capitalize", "\xc5\x89x", "\xca\xbcNx");              /* 'ŉx' -> 'ʼNx' */
    expect_fn(ad_py_capitalize, "capitalize", "\xce\x90", "\xce\x99\xcc\x88\xcc\x81"); /* 'ΐ' -> 'Ϊ́' */
    expect_fn(ad_py_capitalize, "capitalize", "\xc7\xb2Z", "\xc7\xb2z");               /* 'ǲZ' -> 'ǲz' */
    expect_fn(ad_py_capitalize, "capitalize", "1ABC", "1abc");
    expect_fn(ad_py_capitalize, "capitalize", "hELLO wORLD", "Hello world");
    expect_fn(ad_py_capitalize, "capitalize", "", "");
    /* Greek final sigma in the rest: 'ΌΣΟΣ ΣΑΣ' -> 'Όσος σας'; 'aΣ' -> 'Aς'; 'Σ' -> 'Σ' (first
     * character: titlecase); "ΑΣ'Α" -> "Ασ'α" (a cased letter after the apostrophe) */
    expect_fn(ad_py_capitalize, "capitalize", "\xce\x8c\xce\xa3\xce\x9f\xce\xa3 \xce\xa3\xce\x91\xce\xa3",
              "\xce\x8c\xcf\x83\xce\xbf\xcf\x82 \xcf\x83\xce\xb1\xcf\x82");
    expect_fn(ad_py_capitalize, "capitalize", "a\xce\xa3", "A\xcf\x82");
    expect_fn(ad_py_capitalize, "capitalize", "\xce\xa3", "\xce\xa3");
    expect_fn(ad_py_capitalize, "capitalize", "\xce\x91\xce\xa3'\xce\x91", "\xce\x91\xcf\x83'\xce\xb1");
}

Test(unicode, lower_full_and_final_sigma) {
    expect_fn(ad_py_lower, "lower", "\xc4\xb0", "i\xcc\x87");                          /* 'İ' -> 'i̇' */
    expect_fn(ad_py_lower, "lower", "\xce\x91\xce\xa3.", "\xce\xb1\xcf\x82.");         /* 'ΑΣ.' -> 'ας.' */
    expect_fn(ad_py_lower, "lower", "\xce\xa3", "\xcf\x83");                           /* 'Σ' -> 'σ' */
    expect_fn(ad_py_lower, "lower", "\xc7\x85", "\xc7\x86");                           /* 'ǅ' -> 'ǆ' */
    expect_fn(ad_py_lower, "lower", "\xc3\x9f" "A", "\xc3\x9f" "a");                   /* 'ßA' -> 'ßa' */
}

Test(unicode, len_counts_code_points) {
    cr_expect_eq(ad_utf8_len("na\xc3\xafve \xe2\x82\xac"), 7);   /* len('naïve €') */
    cr_expect_eq(ad_utf8_len("\xf0\x9f\x98\x80"), 1);            /* len('😀') */
    cr_expect_eq(ad_utf8_len(""), 0);
}

/* Invalid UTF-8: each byte that does not start a well-formed sequence is one character
 * (surrogateescape): never whitespace, never case-mapped, written back unchanged. */
Test(unicode, invalid_utf8_is_handled_byte_by_byte) {
    /* b'\xff  a\x80 \xc2\xa0': strip -> b'\xff  a\x80', capitalize unchanged, len 7 */
    expect_fn(ad_py_strip, "strip", "\xff  a\x80 \xc2\xa0", "\xff  a\x80");
    expect_fn(ad_py_capitalize, "capitalize", "\xff  a\x80 \xc2\xa0", "\xff  a\x80 \xc2\xa0");
    cr_expect_eq(ad_utf8_len("\xff  a\x80 \xc2\xa0"), 7);
    /* b'\xffAB'.capitalize() -> b'\xffab'; b'a\xc3' (truncated) -> b'A\xc3', len 2 */
    expect_fn(ad_py_capitalize, "capitalize", "\xff" "AB", "\xff" "ab");
    expect_fn(ad_py_capitalize, "capitalize", "a\xc3", "A\xc3");
    cr_expect_eq(ad_utf8_len("a\xc3"), 2);
    /* b'\xe2\x82 ' (truncated euro sign): strip -> b'\xe2\x82', len 3 (two escaped bytes + space) */
    expect_fn(ad_py_strip, "strip", "\xe2\x82 ", "\xe2\x82");
    cr_expect_eq(ad_utf8_len("\xe2\x82 "), 3);
    /* an encoded surrogate b' \xed\xa0\x80 ' is invalid (3 escaped bytes): strip -> b'\xed\xa0\x80' */
    expect_fn(ad_py_strip, "strip", " \xed\xa0\x80 ", "\xed\xa0\x80");
    cr_expect_eq(ad_utf8_len(" \xed\xa0\x80 "), 5);
    /* b'\xc3\x89\xe2\x82'.capitalize(): 'É' stays, the bytes stay */
    expect_fn(ad_py_capitalize, "capitalize", "\xc3\x89\xe2\x82", "\xc3\x89\xe2\x82");
    /* where Python's strict decoder fails: first bad byte */
    cr_expect_eq(ad_u8_check("abc", 3), (size_t)-1);
    cr_expect_eq(ad_u8_check("\xf0\x9f\x98\x80\xc3\xa9", 6), (size_t)-1);
    cr_expect_eq(ad_u8_check("\xc0\xaf", 2), 0);                 /* overlong '/' */
    cr_expect_eq(ad_u8_check("ab\xed\xa0\x80", 5), 2);           /* surrogate U+D800 */
    cr_expect_eq(ad_u8_check("ab\xf4\x90\x80\x80", 6), 2);       /* U+110000 */
    cr_expect_eq(ad_u8_check("abc\xe2\x82", 5), 3);              /* truncated at the end */
    cr_expect_eq(ad_u8_check("a\x80", 2), 1);                    /* lone continuation byte */
    int len;
    cr_expect_eq(ad_u8_decode("\xff", 1, &len), 0xDCFF);
    cr_expect_eq(len, 1);
    cr_expect_eq(ad_u8_decode("\xe2\x82\xac", 3, &len), 0x20AC);
    cr_expect_eq(len, 3);
}

/* ---- wikitext: invalid UTF-8 named by file and byte offset in that file -------------------------- */
static void write_bytes(const char *path, const char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

Test(unicode, wikitext_invalid_utf8_names_file_and_offset) {
    char dir[64], path[128], err[AX_ERR_LEN] = "";
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/wiki.test.raw", dir);
    /* the bad byte 0xff is byte 20 of the file (" = A = \n" is 8 bytes, " \n" 2, "Hello w" 7,
     * "\xc3\xa9" 2, "x" 1: 8 + 2 + 7 + 2 + 1 = 20), on line 3, column 11 */
    const char raw[] = " = A = \n \nHello w\xc3\xa9x\xff more\n";
    write_bytes(path, raw, sizeof raw - 1);
    ad_text t;
    cr_assert_neq(ad_wikitext_load_file(path, &t, err), 0);
    cr_expect(strstr(err, path) != NULL, "names the file: %s", err);
    cr_expect(strstr(err, "byte offset 20") != NULL, "offset in the file: %s", err);
    cr_expect(strstr(err, "line 3") != NULL, "%s", err);
    cr_expect(strstr(err, "UTF-8") != NULL, "%s", err);
    /* a NUL byte: offset too */
    write_bytes(path, "ab\ncd\0e\n", 8);
    cr_assert_neq(ad_wikitext_load_file(path, &t, err), 0);
    cr_expect(strstr(err, path) && strstr(err, "NUL") && strstr(err, "byte offset 5"), "%s", err);
    remove(path);
    remove(dir);
}

Test(unicode, wikitext_unicode_whitespace_only_line_is_an_empty_row) {
    /* datasets' wikitext builder: a row is kept when row.strip() is non-empty, else "":
     * '\u3000\xa0'.strip() == '' -> rows ["a\n", "", "b\n"] -> "a\n" + "\n\n" + "" + "\n\n" + "b\n" */
    const char *raw = "a\n\xe3\x80\x80\xc2\xa0\nb\n";
    char *j;
    size_t n;
    long rows;
    cr_assert_eq(ad_wikitext_join(raw, strlen(raw), &j, &n, &rows), 0);
    cr_expect_str_eq(j, "a\n\n\n\n\nb\n");
    cr_expect_eq(rows, 3);
    free(j);
}
