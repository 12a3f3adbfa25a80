package console

import "testing"

func TestSubjectMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"teatree.notify.flights", "teatree.notify.flights", true},
		{"teatree.notify.*", "teatree.notify.flights", true},
		{"teatree.notify.>", "teatree.notify.flights", true},
		{">", "teatree.notify.flights", true},
		{"teatree.notify.other", "teatree.notify.flights", false},
		{"teatree.notify", "teatree.notify.flights", false},
		{"teatree.notify.flights.x", "teatree.notify.flights", false},
		{"teatree.*.flights", "teatree.notify.flights", true},
		{"teatree.notify.flights.>", "teatree.notify.flights", false},
	} {
		if got := subjectMatches(tc.filter, tc.subject); got != tc.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tc.filter, tc.subject, got, tc.want)
		}
	}
}
