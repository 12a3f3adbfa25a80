package svcinfo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/internal/svcinfo"
)

// TestGatherInfo: Gather reports a teatree service's info with the
// fields filled in by the endpoint, a micro service without an info
// endpoint and one whose info comes too late with what $SRV.INFO told,
// and Ping finds all three; after Stop a service is gone.
func TestGatherInfo(t *testing.T) {
	nc, err := nats.Connect(natsembed.StartTest(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var errs svcinfo.ErrorLog
	errs.Record(errors.New("disk full"))
	lag := uint64(7)
	ok, err := svcinfo.Add(nc, svcinfo.DBManager, "test", map[string]string{"model": "m"}, func(context.Context) svcinfo.Info {
		return svcinfo.Info{Models: []string{"m"}, Position: 42, Lag: &lag, LastError: errs.Last()}
	})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := svcinfo.Add(nc, svcinfo.Reader, "test", nil, func(ctx context.Context) svcinfo.Info {
		<-ctx.Done() // answers after ReportTimeout, later than Gather waits
		return svcinfo.Info{Models: []string{"late"}}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Stop()
	other, err := micro.AddService(nc, micro.Config{Name: "other", Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Stop()

	got, err := svcinfo.Gather(nc, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]svcinfo.Info{}
	for _, in := range got {
		byKind[in.Kind] = in
	}
	d := byKind[svcinfo.DBManager]
	if len(got) != 3 || d.ID != ok.Info().ID || d.Version != svcinfo.Version() || d.Position != 42 || d.Lag == nil || *d.Lag != 7 ||
		d.Metadata["model"] != "m" || d.Started.IsZero() || d.PID == 0 || d.Memory.GoSys == 0 || d.LastError == nil || d.LastError.Error != "disk full" {
		t.Errorf("Gather: %+v", got)
	}
	if r := byKind[svcinfo.Reader]; r.ID != slow.Info().ID || len(r.Models) != 0 || r.Version != svcinfo.Version() {
		t.Errorf("late info: %+v, want the discovery fields only", r)
	}
	if o := byKind["other"]; o.ID != other.Info().ID || o.Version != "1.2.3" {
		t.Errorf("a service without info: %+v", o)
	}
	if ps, err := svcinfo.Ping(nc, 200*time.Millisecond); err != nil || len(ps) != 3 {
		t.Errorf("Ping: %v %+v", err, ps)
	}
	ok.Stop()
	if ps, err := svcinfo.Ping(nc, 200*time.Millisecond); err != nil || len(ps) != 2 {
		t.Errorf("Ping after Stop: %v %+v", err, ps)
	}
}

func TestDecodeRefusesNonInfo(t *testing.T) {
	for _, in := range []string{``, `null`, `[]`, `{}`, `{"kind":"x"}`, `{"id":"y"}`, `{"kind":1,"id":"y"}`} {
		if _, err := svcinfo.Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%q): no error", in)
		}
	}
}

// FuzzDecodeInfo: Decode never panics, what it accepts has a kind and an
// id, and encoding it decodes to the same.
func FuzzDecodeInfo(f *testing.F) {
	f.Add([]byte(`{"kind":"teatree-dbmanager","id":"abc","version":"0.0.0-dev","started":"2026-01-01T00:00:00Z","models":["m"],"position":3,"lag":0,"memory":{"go_heap":1,"go_sys":2,"duckdb":3},"last_error":{"error":"e","time":"2026-01-01T00:00:01Z"}}`))
	f.Add([]byte(`{"kind":"teatree-reader","id":"x","versions":{"m":2},"in_flight":1}`))
	f.Add([]byte(`{"kind":"k","id":"i","lag":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := svcinfo.Decode(data)
		if err != nil {
			return
		}
		if in.Kind == "" || in.ID == "" {
			t.Fatalf("accepted %q without kind or id", data)
		}
		enc, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("marshal %+v: %v", in, err)
		}
		again, err := svcinfo.Decode(enc)
		if err != nil {
			t.Fatalf("decode %s: %v", enc, err)
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip:\n%s\n%s", enc, enc2)
		}
	})
}
