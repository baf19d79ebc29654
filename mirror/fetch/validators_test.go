package fetch

import "testing"

// TestLastModifiedNearDate: a Last-Modified within 2 s of its response's
// Date is not trusted for If-Modified-Since; older ones, and validators
// without one of the headers, are.
func TestLastModifiedNearDate(t *testing.T) {
	const lm = "Mon, 07 Dec 2026 17:38:24 GMT"
	for _, c := range []struct {
		date string
		want bool
	}{
		{"Mon, 07 Dec 2026 17:38:24 GMT", true},
		{"Mon, 07 Dec 2026 17:38:26 GMT", true},
		{"Mon, 07 Dec 2026 17:38:27 GMT", false},
		{"Mon, 07 Dec 2026 17:38:22 GMT", true}, // server clock behind the file's
		{"Mon, 07 Dec 2026 18:38:24 GMT", false},
		{"", false},
		{"yesterday", false},
	} {
		if got := (Validators{LastModified: lm, Date: c.date}).LastModifiedNearDate(); got != c.want {
			t.Errorf("Date %q: got %v, want %v", c.date, got, c.want)
		}
	}
	if (Validators{Date: lm}).LastModifiedNearDate() {
		t.Error("no Last-Modified: near")
	}
}
