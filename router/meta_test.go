package router

import (
	"strings"
	"testing"
	"time"
)

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{ID: "0a1b2c", PID: 4242, LAN: "wlan0", Expires: time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC), IPv4Forward: "0", IPv6Forward: "1"}
	listing := "table inet unicorn {\n\tcomment " + quote(m.String()) + "\n\tchain forward {\n\t}\n}\n"
	got, err := ParseMeta(listing)
	if err != nil {
		t.Fatal(err)
	}
	if got != m {
		t.Errorf("ParseMeta = %+v, want %+v", got, m)
	}
	if _, err := ParseMeta("table inet unicorn {\n}\n"); err == nil || !strings.Contains(err.Error(), "not installed by `unicorn router up`") {
		t.Errorf("a table without the comment: %v", err)
	}
}
