// Package text holds the string helpers that several layers share: cutting
// a string to a byte limit, quoting an argument of nft or iptables-restore,
// and listing the first few of many names. It imports nothing of nodefw, so
// that every package may import it.
package text

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Truncate shortens s to at most n bytes without splitting a character;
// n <= 0 gives "".
func Truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Quote makes a double-quoted string argument for nft or iptables-restore.
// Neither has escapes inside quotes, so characters that would end or break
// the string are replaced with '_'.
func Quote(s string) string {
	return `"` + strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s) + `"`
}

// ListSome joins the first n names with ", " and says how many it left
// out: "a, b, c and 2 more".
func ListSome(names []string, n int) string {
	if len(names) > n {
		return strings.Join(names[:n], ", ") + " and " + strconv.Itoa(len(names)-n) + " more"
	}
	return strings.Join(names, ", ")
}
