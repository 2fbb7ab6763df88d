package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Bounds on the simulated hardware: enough for any real node, small enough that a typo (--gpus 800) fails.
const (
	maxGPUs     = 64
	maxReplicas = 64
	// A unix socket path (sun_path) holds 107 bytes and a NUL on Linux.
	maxSocketPath = 107
)

// Config is what the plugin serves, after flags, environment and the optional time-slicing file.
type Config struct {
	ResourceName string
	GPUs         int
	Replicas     int
	KubeletDir   string
	SocketName   string
	// FailRequestsGreaterThanOne: sharing.timeSlicing.failRequestsGreaterThanOne of the config file (replicas > 1 only).
	FailRequestsGreaterThanOne bool
	// PollInterval: how often the kubelet socket and the plugin's own socket are checked, besides fsnotify events.
	PollInterval time.Duration
	// RegisterTimeout bounds one Register call to the kubelet (the kubelet dials back and asks for the options in it).
	RegisterTimeout time.Duration
}

func (c Config) SocketPath() string        { return filepath.Join(c.KubeletDir, c.SocketName) }
func (c Config) KubeletSocketPath() string { return filepath.Join(c.KubeletDir, kubeletSocketName) }

const kubeletSocketName = "kubelet.sock"

// The kubelet's own files in the device-plugin directory; the plugin's socket must not take their names.
var reservedNames = map[string]bool{kubeletSocketName: true, "kubelet_internal_checkpoint": true}

// option is one setting: its flag, its environment variable and its default.
type option struct {
	flag, env, def, usage string
}

var options = []option{
	{"resource-name", "SIM_GPU_RESOURCE_NAME", "nvidia.com/gpu", "extended resource to advertise"},
	{"gpus", "SIM_GPU_GPUS", "1", fmt.Sprintf("physical simulated GPUs (1-%d)", maxGPUs)},
	{"replicas", "SIM_GPU_REPLICAS", "", fmt.Sprintf("time-slicing replicas per GPU (1-%d; default: the config file's, else 1)", maxReplicas)},
	{"kubelet-dir", "SIM_GPU_KUBELET_DIR", "/var/lib/kubelet/device-plugins", "the kubelet's device-plugin directory (holds kubelet.sock)"},
	{"socket-name", "SIM_GPU_SOCKET_NAME", "harness-sim-gpu.sock", "file name of the plugin's socket in --kubelet-dir"},
	{"config", "SIM_GPU_CONFIG", "", "optional YAML/JSON file in the GPU Operator's time-slicing format"},
	{"poll-interval", "SIM_GPU_POLL_INTERVAL", "1s", "how often kubelet.sock and the plugin socket are checked (100ms-1m), besides inotify"},
	{"register-timeout", "SIM_GPU_REGISTER_TIMEOUT", "10s", "timeout of one Register call to the kubelet (1s-5m)"},
}

// parseConfig reads the settings: a flag given on the command line wins over its environment variable, which wins
// over the config file (replicas only), which wins over the default. Every error names the bad value and what is
// allowed.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("sim-gpu-device-plugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vals := map[string]*string{}
	for _, o := range options {
		vals[o.flag] = fs.String(o.flag, o.def, o.usage+" [$"+o.env+"]")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: the plugin takes only flags (see --help)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	// value returns the setting and where it came from (for the error messages).
	value := func(name string) (string, string, bool) {
		for _, o := range options {
			if o.flag != name {
				continue
			}
			if given[name] {
				return *vals[name], "--" + name, true
			}
			if v := getenv(o.env); v != "" {
				return v, "$" + o.env, true
			}
			return o.def, "--" + name, false
		}
		panic("unknown option " + name)
	}

	var c Config
	var err error
	var src string
	c.ResourceName, src, _ = value("resource-name")
	if err := validateResourceName(c.ResourceName); err != nil {
		return Config{}, fmt.Errorf("%s %q: %w", src, c.ResourceName, err)
	}
	v, src, _ := value("gpus")
	if c.GPUs, err = parseBoundedInt(v, src, 1, maxGPUs); err != nil {
		return Config{}, err
	}
	c.Replicas = 1
	if path, src, set := value("config"); set {
		fc, err := loadTimeSlicing(path, c.ResourceName)
		if err != nil {
			return Config{}, fmt.Errorf("%s %q: %w", src, path, err)
		}
		c.Replicas, c.FailRequestsGreaterThanOne = fc.replicas, fc.failRequestsGreaterThanOne
	}
	if v, src, set := value("replicas"); set {
		if c.Replicas, err = parseBoundedInt(v, src, 1, maxReplicas); err != nil {
			return Config{}, err
		}
	}
	c.KubeletDir, src, _ = value("kubelet-dir")
	if !filepath.IsAbs(c.KubeletDir) {
		return Config{}, fmt.Errorf("%s %q: must be an absolute path", src, c.KubeletDir)
	}
	c.KubeletDir = filepath.Clean(c.KubeletDir)
	c.SocketName, src, _ = value("socket-name")
	if err := validateSocketName(c.SocketName); err != nil {
		return Config{}, fmt.Errorf("%s %q: %w", src, c.SocketName, err)
	}
	for _, p := range []string{c.SocketPath(), c.KubeletSocketPath()} {
		if len(p) > maxSocketPath {
			return Config{}, fmt.Errorf("socket path %q is %d bytes: a unix socket path may have at most %d (shorten --kubelet-dir or --socket-name)", p, len(p), maxSocketPath)
		}
	}
	v, src, _ = value("poll-interval")
	if c.PollInterval, err = parseBoundedDuration(v, src, 100*time.Millisecond, time.Minute); err != nil {
		return Config{}, err
	}
	v, src, _ = value("register-timeout")
	if c.RegisterTimeout, err = parseBoundedDuration(v, src, time.Second, 5*time.Minute); err != nil {
		return Config{}, err
	}
	return c, nil
}

func parseBoundedInt(v, src string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q: must be an integer from %d to %d", src, v, lo, hi)
	}
	return n, nil
}

func parseBoundedDuration(v, src string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("%s %q: must be a duration from %s to %s (e.g. 1s)", src, v, lo, hi)
	}
	return d, nil
}

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	qualifiedTop = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
)

// validateResourceName applies the kubelet's check on a registering plugin (v1helper.IsExtendedResourceName):
// a domain-prefixed name outside kubernetes.io/, and "requests.<name>" a qualified name (DNS-1123 subdomain
// prefix of at most 253 characters, a name of at most 63 characters of [A-Za-z0-9_.-] starting and ending
// alphanumeric).
func validateResourceName(name string) error {
	const allowed = "must be an extended resource name <domain>/<name> outside kubernetes.io/ (e.g. nvidia.com/gpu)"
	prefix, base, ok := strings.Cut(name, "/")
	if !ok || strings.Contains(base, "/") || strings.Contains(name, "kubernetes.io/") ||
		strings.HasPrefix(name, "requests.") {
		return errors.New(allowed)
	}
	prefix = "requests." + prefix
	if len(prefix) > 253 || len(base) == 0 || len(base) > 63 || !qualifiedTop.MatchString(base) {
		return errors.New(allowed)
	}
	for _, label := range strings.Split(prefix, ".") {
		if !dns1123Label.MatchString(label) {
			return errors.New(allowed)
		}
	}
	return nil
}

func validateSocketName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return errors.New("must be a plain file name (no /) in --kubelet-dir")
	}
	if reservedNames[name] {
		return errors.New("is the kubelet's own file in the device-plugin directory; choose another name")
	}
	return nil
}

// The GPU Operator's time-slicing ConfigMap entry (NVIDIA k8s-device-plugin config, version v1). Only
// sharing.timeSlicing with renameByDefault false is served; the rest is refused by name rather than ignored.
type pluginConfigFile struct {
	Version string         `json:"version"`
	Flags   map[string]any `json:"flags,omitempty"`
	Sharing struct {
		TimeSlicing *struct {
			RenameByDefault            bool `json:"renameByDefault,omitempty"`
			FailRequestsGreaterThanOne bool `json:"failRequestsGreaterThanOne,omitempty"`
			Resources                  []struct {
				Name     string `json:"name"`
				Rename   string `json:"rename,omitempty"`
				Devices  any    `json:"devices,omitempty"`
				Replicas *int   `json:"replicas"`
			} `json:"resources"`
		} `json:"timeSlicing,omitempty"`
		MPS any `json:"mps,omitempty"`
	} `json:"sharing"`
}

type timeSlicingSettings struct {
	replicas                   int
	failRequestsGreaterThanOne bool
}

func loadTimeSlicing(path, resourceName string) (timeSlicingSettings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return timeSlicingSettings{}, err
	}
	return parseTimeSlicing(data, resourceName)
}

func parseTimeSlicing(data []byte, resourceName string) (timeSlicingSettings, error) {
	out := timeSlicingSettings{replicas: 1}
	var f pluginConfigFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return out, fmt.Errorf("not a time-slicing config (version: v1, sharing.timeSlicing.resources): %w", err)
	}
	if f.Version != "v1" {
		return out, fmt.Errorf("version %q: only \"v1\" is allowed", f.Version)
	}
	if f.Sharing.MPS != nil {
		return out, errors.New("sharing.mps is not supported: only sharing.timeSlicing is simulated")
	}
	ts := f.Sharing.TimeSlicing
	if ts == nil {
		return out, nil // no sharing: one device per GPU, as NVIDIA's plugin without a sharing section
	}
	if ts.RenameByDefault {
		return out, fmt.Errorf("sharing.timeSlicing.renameByDefault true is not supported: the resource keeps its name %q", resourceName)
	}
	out.failRequestsGreaterThanOne = ts.FailRequestsGreaterThanOne
	found := false
	for i, r := range ts.Resources {
		at := fmt.Sprintf("sharing.timeSlicing.resources[%d]", i)
		switch {
		case r.Name != resourceName:
			return out, fmt.Errorf("%s.name %q: only the served resource %q is allowed (set --resource-name)", at, r.Name, resourceName)
		case found:
			return out, fmt.Errorf("%s.name %q: listed twice", at, r.Name)
		case r.Rename != "":
			return out, fmt.Errorf("%s.rename %q: renaming is not supported, the resource keeps its name", at, r.Rename)
		case r.Devices != nil && r.Devices != "all":
			return out, fmt.Errorf("%s.devices %v: only \"all\" is allowed (every simulated GPU is shared)", at, r.Devices)
		case r.Replicas == nil:
			return out, fmt.Errorf("%s.replicas: missing (an integer from 1 to %d)", at, maxReplicas)
		case *r.Replicas < 1 || *r.Replicas > maxReplicas:
			return out, fmt.Errorf("%s.replicas %d: must be an integer from 1 to %d", at, *r.Replicas, maxReplicas)
		}
		found = true
		out.replicas = *r.Replicas
	}
	return out, nil
}
