// Package envflag registers command-line flags whose defaults come from
// TEATREE_* environment variables, the configuration convention of every
// teatree binary: a flag beats the environment, the environment beats the
// built-in default. Usage texts name the variable.
package envflag

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"
)

// Set registers flags on a FlagSet with defaults read through Getenv.
type Set struct {
	FS     *pflag.FlagSet
	Getenv func(string) string
	errs   []error
}

// Err reports the environment variables whose values could not be parsed.
func (s *Set) Err() error { return errors.Join(s.errs...) }

func (s *Set) bad(env, v, want string) {
	s.errs = append(s.errs, fmt.Errorf("$%s=%q is not %s", env, v, want))
}

func (s *Set) env(name string) (string, bool) {
	if s.Getenv == nil {
		return "", false
	}
	v := s.Getenv(name)
	return v, v != ""
}

// String registers a string flag.
func (s *Set) String(p *string, name, env, def, usage string) {
	if v, ok := s.env(env); ok {
		def = v
	}
	s.FS.StringVar(p, name, def, usage+" ($"+env+")")
}

// Int registers an int flag; an unparsable variable is reported by Err.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	if v, ok := s.env(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.bad(env, v, "a whole number")
		}
		def = n
	}
	s.FS.IntVar(p, name, def, usage+" ($"+env+")")
}

// Bool registers a bool flag.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	if v, ok := s.env(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.bad(env, v, "true or false")
		}
		def = b
	}
	s.FS.BoolVar(p, name, def, usage+" ($"+env+")")
}

// Duration registers a duration flag (Go syntax: 90s, 5m, 1h).
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, ok := s.env(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.bad(env, v, "a duration such as 90s or 5m")
		}
		def = d
	}
	s.FS.DurationVar(p, name, def, usage+" ($"+env+")")
}

// Float64 registers a float64 flag.
func (s *Set) Float64(p *float64, name, env string, def float64, usage string) {
	if v, ok := s.env(env); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			s.bad(env, v, "a number such as 0.5")
		}
		def = f
	}
	s.FS.Float64Var(p, name, def, usage+" ($"+env+")")
}

// Int64 registers an int64 flag; an unparsable variable is reported by Err.
func (s *Set) Int64(p *int64, name, env string, def int64, usage string) {
	if v, ok := s.env(env); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			s.bad(env, v, "a whole number")
		}
		def = n
	}
	s.FS.Int64Var(p, name, def, usage+" ($"+env+")")
}
