package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds `go env` and `go build`; a cold build cache takes a
// while, a warm one a second or two.
const buildTimeout = 3 * time.Minute

// build is the binary this test process built, once.
var build struct {
	once sync.Once
	dir  string // temporary directory holding the binary, removed by Main
	path string
	err  error
}

// Binary builds ./cmd/unicorn once per test process (with the race
// detector when the tests run with it) and returns the path of the binary.
// It fails tb if the build fails. Call Main from TestMain so that the
// binary is removed when the tests end.
func Binary(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() { build.path, build.err = buildBinary() })
	if build.err != nil {
		tb.Fatalf("testbed: building unicorn: %v", build.err)
	}
	return build.path
}

// Main runs the tests and removes the binary Binary built; it returns the
// exit code. Use it as:
//
//	func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	return code
}

// ModuleRoot returns the directory of the go.mod of the module under test.
func ModuleRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := goCmd(ctx, "", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(out)
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
}

func buildBinary() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "unicorn-testbed-")
	if err != nil {
		return "", err
	}
	build.dir = dir
	path := filepath.Join(dir, "unicorn")
	args := []string{"build", "-o", path}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/unicorn")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	if _, err := goCmd(ctx, root, args...); err != nil {
		return "", err
	}
	return path, nil
}

// goCmd runs the go command (go test puts its own first in PATH) in dir.
func goCmd(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}
