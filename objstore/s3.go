package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3Config configures an S3 store.
type S3Config struct {
	Bucket    string
	Prefix    string // prepended to every key, without slashes at the ends
	Endpoint  string // e.g. http://127.0.0.1:9000 for MinIO; empty for AWS
	Region    string // default us-east-1
	PathStyle bool   // bucket in the path, as MinIO and most non-AWS servers want
	// AccessKey and SecretKey, when set, replace the SDK's credential chain.
	AccessKey, SecretKey string
}

// S3 is a Store in an S3 bucket. Put uses multipart upload for objects
// larger than PartSize, with the SDK's upload manager.
type S3 struct {
	client   *s3.Client
	uploader *manager.Uploader
	bucket   string
	prefix   string
	cfg      S3Config // without the credentials
}

var _ Store = (*S3)(nil)

// PartSize is the multipart part size (16 MiB: 64 parts for 1 GiB).
const PartSize = 16 << 20

// NewS3 returns an S3 store and checks that the bucket is reachable.
func NewS3(ctx context.Context, c S3Config) (*S3, error) {
	if c.Bucket == "" {
		return nil, errors.New("objstore: S3 bucket is empty: use s3://bucket/prefix")
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(c.Region)}
	if c.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("objstore: S3 configuration: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
	})
	s := &S3{client: client, bucket: c.Bucket, prefix: strings.Trim(c.Prefix, "/"),
		cfg:      S3Config{Bucket: c.Bucket, Prefix: strings.Trim(c.Prefix, "/"), Endpoint: c.Endpoint, Region: c.Region, PathStyle: c.PathStyle},
		uploader: manager.NewUploader(client, func(u *manager.Uploader) { u.PartSize = PartSize })}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(c.Bucket)}); err != nil {
		return nil, fmt.Errorf("objstore: S3 bucket %q at %s is not reachable: %w (check the endpoint, the region and the credentials)", c.Bucket, endpointName(c.Endpoint), err)
	}
	return s, nil
}

// Config returns the store's configuration without the credentials
// (AccessKey and SecretKey empty); Region is filled in (default us-east-1).
func (s *S3) Config() S3Config { return s.cfg }

// URI implements Store: s3://bucket/prefix/key.
func (s *S3) URI(key string) string {
	return "s3://" + s.bucket + "/" + path.Join(s.prefix, key)
}

func endpointName(e string) string {
	if e == "" {
		return "AWS"
	}
	return e
}

func (s *S3) key(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if s.prefix == "" {
		return key, nil
	}
	return path.Join(s.prefix, key), nil
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var api smithy.APIError
	return errors.As(err, &nsk) || errors.As(err, &nf) || (errors.As(err, &api) && api.ErrorCode() == "NotFound")
}

func (s *S3) wrap(op, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("objstore: %s s3://%s/%s: %w", op, s.bucket, key, err)
}

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	in := &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k), Body: r}
	if size >= 0 && size < PartSize {
		in.ContentLength = aws.Int64(size)
	}
	if _, err := s.uploader.Upload(ctx, in); err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	return out.Body, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	k, err := s.key(key)
	if err != nil {
		return Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		return Info{}, s.wrap("stat", key, err)
	}
	return Info{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified)}, nil
}

// List implements Store. S3 lists keys in UTF-8 binary order, which is
// the sort order of Go strings.
func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	full := prefix
	if s.prefix != "" {
		full = s.prefix + "/" + prefix
	}
	var out []Info
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(full)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.wrap("list", prefix, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if s.prefix != "" {
				key = strings.TrimPrefix(key, s.prefix+"/")
			}
			out = append(out, Info{Key: key, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)})
		}
	}
	return out, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)}); err != nil && !isNotFound(err) {
		return s.wrap("delete", key, err)
	}
	return nil
}
