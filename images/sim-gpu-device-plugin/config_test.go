package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{ResourceName: "nvidia.com/gpu", GPUs: 1, Replicas: 1, KubeletDir: "/var/lib/kubelet/device-plugins",
		SocketName: "harness-sim-gpu.sock", PollInterval: time.Second, RegisterTimeout: 10 * time.Second}
	if c != want {
		t.Fatalf("defaults: got %+v, want %+v", c, want)
	}
	if c.KubeletSocketPath() != "/var/lib/kubelet/device-plugins/kubelet.sock" {
		t.Fatalf("kubelet socket: %s", c.KubeletSocketPath())
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	e := env(map[string]string{"SIM_GPU_GPUS": "3", "SIM_GPU_REPLICAS": "5", "SIM_GPU_RESOURCE_NAME": "example.com/gpu",
		"SIM_GPU_KUBELET_DIR": "/env/dir", "SIM_GPU_SOCKET_NAME": "env.sock"})
	c, err := parseConfig(nil, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.GPUs != 3 || c.Replicas != 5 || c.ResourceName != "example.com/gpu" || c.KubeletDir != "/env/dir" || c.SocketName != "env.sock" {
		t.Fatalf("environment not used: %+v", c)
	}
	c, err = parseConfig([]string{"--gpus", "2", "--replicas=4", "--resource-name", "nvidia.com/gpu",
		"--kubelet-dir", "/state/node/kubelet/device-plugins/", "--socket-name", "x.sock"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.GPUs != 2 || c.Replicas != 4 || c.ResourceName != "nvidia.com/gpu" || c.SocketName != "x.sock" ||
		c.SocketPath() != "/state/node/kubelet/device-plugins/x.sock" {
		t.Fatalf("flags did not win: %+v", c)
	}
}

func TestBadSettingsNameTheValue(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	cases := []struct {
		args    []string
		env     map[string]string
		message string
	}{
		{[]string{"--gpus", "0"}, nil, `--gpus "0": must be an integer from 1 to 64`},
		{[]string{"--gpus", "65"}, nil, `--gpus "65": must be an integer from 1 to 64`},
		{[]string{"--gpus", "two"}, nil, `--gpus "two": must be an integer`},
		{[]string{"--replicas", "0"}, nil, `--replicas "0": must be an integer from 1 to 64`},
		{nil, map[string]string{"SIM_GPU_REPLICAS": "100"}, `$SIM_GPU_REPLICAS "100": must be an integer from 1 to 64`},
		{[]string{"--resource-name", "gpu"}, nil, `--resource-name "gpu": must be an extended resource name`},
		{[]string{"--resource-name", "kubernetes.io/gpu"}, nil, `--resource-name "kubernetes.io/gpu": must be an extended`},
		{[]string{"--resource-name", "nvidia.com/gpu_"}, nil, `--resource-name "nvidia.com/gpu_": must be an extended`},
		{[]string{"--resource-name", "Nvidia.com/gpu"}, nil, `--resource-name "Nvidia.com/gpu": must be an extended`},
		{[]string{"--resource-name", "nvidia.com/a/b"}, nil, `--resource-name "nvidia.com/a/b": must be an extended`},
		{[]string{"--kubelet-dir", "var/lib/kubelet"}, nil, `--kubelet-dir "var/lib/kubelet": must be an absolute path`},
		{[]string{"--socket-name", "kubelet.sock"}, nil, `--socket-name "kubelet.sock": is the kubelet's own file`},
		{[]string{"--socket-name", "a/b.sock"}, nil, `--socket-name "a/b.sock": must be a plain file name`},
		{[]string{"--kubelet-dir", long}, nil, `a unix socket path may have at most 107`},
		{[]string{"--poll-interval", "1ms"}, nil, `--poll-interval "1ms": must be a duration from 100ms to 1m0s`},
		{[]string{"--config", "/nonexistent/ts.yaml"}, nil, `--config "/nonexistent/ts.yaml": open /nonexistent/ts.yaml`},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		_, err := parseConfig(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.message) {
			t.Errorf("%v %v: got error %v, want one containing %q", tc.args, tc.env, err, tc.message)
		}
	}
}

func TestExtendedResourceNames(t *testing.T) {
	for _, ok := range []string{"nvidia.com/gpu", "harness.local/sim-gpu", "example.com/Gpu.shared", "a.b.c/x_y"} {
		if err := validateResourceName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "gpu", "/gpu", "nvidia.com/", "foo.kubernetes.io/gpu", "requests.nvidia.com/gpu",
		"-nvidia.com/gpu", "nvidia..com/gpu", "nvidia.com/-gpu", "nvidia.com/" + strings.Repeat("g", 64)} {
		if err := validateResourceName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestUnknownFlagAndHelp(t *testing.T) {
	if _, err := parseConfig([]string{"--gpu", "2"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "-gpu") {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := parseConfig([]string{"--help"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const operatorConfig = `version: v1
flags:
  migStrategy: none
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
`

func TestTimeSlicingConfigFile(t *testing.T) {
	path := writeFile(t, "any.yaml", operatorConfig)
	c, err := parseConfig([]string{"--config", path, "--gpus", "2"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Replicas != 4 || c.GPUs != 2 || c.FailRequestsGreaterThanOne {
		t.Fatalf("config file: %+v", c)
	}
	// --replicas (or its variable) overrides the file.
	c, err = parseConfig([]string{"--replicas", "2"}, env(map[string]string{"SIM_GPU_CONFIG": path}), io.Discard)
	if err != nil || c.Replicas != 2 {
		t.Fatalf("--replicas over the file: %+v %v", c, err)
	}
	js := writeFile(t, "ts.json", `{"version":"v1","sharing":{"timeSlicing":{"failRequestsGreaterThanOne":true,`+
		`"resources":[{"name":"example.com/gpu","devices":"all","replicas":8}]}}}`)
	c, err = parseConfig([]string{"--config", js, "--resource-name", "example.com/gpu"}, env(nil), io.Discard)
	if err != nil || c.Replicas != 8 || !c.FailRequestsGreaterThanOne {
		t.Fatalf("JSON config: %+v %v", c, err)
	}
	c, err = parseConfig([]string{"--config", writeFile(t, "none.yaml", "version: v1\n")}, env(nil), io.Discard)
	if err != nil || c.Replicas != 1 {
		t.Fatalf("config without sharing: %+v %v", c, err)
	}
}

func TestBadTimeSlicingConfig(t *testing.T) {
	cases := map[string]string{
		"version: v2\n": `version "v2": only "v1" is allowed`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/mig-1g.5gb\n      replicas: 2\n":                                 `resources[0].name "nvidia.com/mig-1g.5gb": only the served resource "nvidia.com/gpu"`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 0\n":                                        `resources[0].replicas 0: must be an integer from 1 to 64`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 65\n":                                       `resources[0].replicas 65: must be an integer from 1 to 64`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n":                                                           `resources[0].replicas: missing`,
		"version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n    resources: []\n":                                                         `renameByDefault true is not supported`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      rename: gpu.shared\n      replicas: 2\n":              `rename "gpu.shared": renaming is not supported`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      devices: [0]\n      replicas: 2\n":                    `devices [0]: only "all" is allowed`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n    - {name: nvidia.com/gpu, replicas: 3}\n": `resources[1].name "nvidia.com/gpu": listed twice`,
		"version: v1\nsharing:\n  mps:\n    resources: []\n":                                                                                            `sharing.mps is not supported`,
		"version: v1\nsharing:\n  timeSlicing:\n    replicas: 4\n":                                                                                      `unknown field "replicas"`,
		"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: \"4\"\n":                                    `not a time-slicing config`,
	}
	for text, message := range cases {
		path := writeFile(t, "c.yaml", text)
		_, err := parseConfig([]string{"--config", path}, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), message) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: got %v, want an error naming %s and containing %q", text, err, path, message)
		}
	}
}
