package queue

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/model"
)

// CancelsBucket is the KV bucket of request cancels: one key per
// cancelled request (CancelKey), written by teactl cancel and read by the
// db-manager of the request's model before it applies each batch. The
// bucket keeps a key as long as the request stream keeps requests
// (Config.MaxAge): a cancel of a request the stream no longer holds is moot.
// A cancel is never withdrawn: the bucket is written, not updated.
const CancelsBucket = "teatree-cancels"

// cancelsStream is the stream behind CancelsBucket (the KV convention).
const cancelsStream = "KV_" + CancelsBucket

// cancelSubject is the KV subject of key k in CancelsBucket.
func cancelSubject(k string) string { return "$KV." + CancelsBucket + "." + k }

// CancelKey is the key of the cancel of request id of model m:
// "<model>.<id in unpadded base64url>". A request id may hold ':' and
// leading or doubled dots, which a KV key may not; the encoding is
// reversible (CancelledIDs decodes it).
func CancelKey(m, id string) string {
	return m + "." + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// Cancel is the value of a key in CancelsBucket.
type Cancel struct {
	RequestID string    `json:"request_id"`
	Model     string    `json:"model"`
	At        time.Time `json:"at"` // the client's clock (informational)
}

// RecordCancel records the cancel of request c.RequestID of model c.Model
// in CancelsBucket and waits for the PubAck: once it returns nil, the
// db-manager skips the request unless it read the bucket for the request's
// batch before (docs/decisions.md, "Cancel"). It is a plain JetStream
// publish on the bucket's subject, so a client needs only permission to
// publish on $KV.teatree-cancels.> (no KV API calls). Recording a cancel
// twice is harmless. Errors: model.ErrInvalid for a bad model or request
// id.
func RecordCancel(ctx context.Context, js jetstream.JetStream, c Cancel) error {
	if err := model.ValidateID(c.Model); err != nil {
		return err
	}
	if err := model.ValidateRequestID(c.RequestID); err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("queue: encode cancel %s: %w", c.RequestID, err)
	}
	msg := &nats.Msg{Subject: cancelSubject(CancelKey(c.Model, c.RequestID)), Data: data}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(cancelsStream)); err != nil {
		return fmt.Errorf("queue: record cancel of %s: %w", c.RequestID, err)
	}
	return nil
}

// CancelledIDs returns the ids of model m's requests that have a cancel
// in CancelsBucket, in one request to the server (the stream's subjects
// under the model's prefix). Every cancel whose RecordCancel returned
// before the call is in the answer. No bucket (a stack whose dispatcher
// predates cancels, so no cancel could be recorded) is no cancel.
func CancelledIDs(ctx context.Context, js jetstream.JetStream, m string) (map[string]bool, error) {
	s, err := js.Stream(ctx, cancelsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return map[string]bool{}, nil // EnsureStreams of a release with cancels has not run: none can be recorded
	}
	if err != nil {
		return nil, fmt.Errorf("queue: cancels of %s: %w", m, err)
	}
	prefix := cancelSubject(m + ".")
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("queue: cancels of %s: %w", m, err)
	}
	out := make(map[string]bool, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		id, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(subj, prefix))
		if err == nil {
			out[string(id)] = true
		}
	}
	return out, nil
}

// ensureCancels creates or updates CancelsBucket.
func ensureCancels(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      CancelsBucket,
		Description: "teatree request cancels: key = <model>.<base64url request id> (teactl cancel)",
		TTL:         cfg.MaxAge,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("queue: ensure KV bucket %s: %w", CancelsBucket, err)
	}
	return nil
}
