package text

import "testing"

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abc", 2, "ab"},
		{"abc", 0, ""},
		{"abc", -1, ""},
		{"", 3, ""},
		// "é" is two bytes: never cut in the middle.
		{"aé", 2, "a"},
		{"aé", 3, "aé"},
		{"éé", 3, "é"},
		{"日本", 5, "日"},
		{"日本", 2, ""},
	} {
		if got := Truncate(tt.s, tt.n); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	for _, tt := range []struct{ s, want string }{
		{"", `""`},
		{"nodefw: loopback", `"nodefw: loopback"`},
		{`a"b\c`, `"a_b_c"`},
		{"tab\there\nnl\x7f", `"tab_here_nl_"`},
		{"ünïcode", `"ünïcode"`},
	} {
		if got := Quote(tt.s); got != tt.want {
			t.Errorf("Quote(%q) = %s, want %s", tt.s, got, tt.want)
		}
	}
}

func TestListSome(t *testing.T) {
	for _, tt := range []struct {
		names []string
		n     int
		want  string
	}{
		{nil, 3, ""},
		{[]string{"a"}, 3, "a"},
		{[]string{"a", "b", "c"}, 3, "a, b, c"},
		{[]string{"a", "b", "c", "d", "e"}, 3, "a, b, c and 2 more"},
	} {
		if got := ListSome(tt.names, tt.n); got != tt.want {
			t.Errorf("ListSome(%q, %d) = %q, want %q", tt.names, tt.n, got, tt.want)
		}
	}
}
