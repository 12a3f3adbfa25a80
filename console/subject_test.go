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

// FuzzSubjectMatches: consumer filters come from the NATS server; any
// filter must be handled without a panic, a subject matches itself, and
// ">" matches every subject.
func FuzzSubjectMatches(f *testing.F) {
	f.Add("teatree.notify.*", "teatree.notify.flights")
	f.Add(">", "a")
	f.Add("..", ".")
	f.Fuzz(func(t *testing.T, filter, subject string) {
		subjectMatches(filter, subject)
		if !subjectMatches(subject, subject) {
			t.Errorf("%q does not match itself", subject)
		}
		if subject != "" && !subjectMatches(">", subject) {
			t.Errorf("> does not match %q", subject)
		}
	})
}
