package importer

import (
	"errors"
	"strings"
)

// tokenize splits a line into words as a shell does for the quoting that
// iptables-save and typed commands use: blanks separate words, double
// quotes group with backslash escapes, single quotes group literally, and
// an unquoted # starts a comment.
func tokenize(s string) ([]string, error) {
	var (
		toks []string
		cur  strings.Builder
		in   bool
	)
	flush := func() {
		if in {
			toks = append(toks, cur.String())
			cur.Reset()
			in = false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
		case c == '#' && !in:
			return toks, nil
		case c == '"':
			in = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
		case c == '\'':
			in = true
			i++
			for ; i < len(s) && s[i] != '\''; i++ {
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated single quote")
			}
		case c == '\\' && i+1 < len(s):
			in = true
			i++
			cur.WriteByte(s[i])
		default:
			in = true
			cur.WriteByte(c)
		}
	}
	flush()
	return toks, nil
}
