package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chaos-unicorn/unicorn/certs"
	"github.com/urfave/cli/v2"
)

// caFormats is the one list of export formats; flag help and errors are
// generated from it.
var caFormats = []struct {
	name, usage string
	export      func(*certs.CA) ([]byte, error)
}{
	{"pem", "PEM text (Android, browsers, curl --cacert)", func(ca *certs.CA) ([]byte, error) { return ca.PEM(), nil }},
	{"der", "binary DER (.cer/.crt; needs --out when stdout is a terminal)", func(ca *certs.CA) ([]byte, error) { return ca.DER(), nil }},
	{"mobileconfig", "Apple configuration profile (iOS, macOS)", (*certs.CA).MobileConfig},
}

func caFormatNames() string {
	names := make([]string, len(caFormats))
	for i, f := range caFormats {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

func caFormatHelp() string {
	var b strings.Builder
	for _, f := range caFormats {
		fmt.Fprintf(&b, "\n  %-13s %s", f.name, f.usage)
	}
	return b.String()
}

func caDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "dir", Usage: "CA directory `DIR` (default $UNICORN_HOME, else the user config directory + /unicorn)"}
}

func caDir(c *cli.Context) (string, error) {
	if d := c.String("dir"); d != "" {
		return d, nil
	}
	d, err := certs.DefaultDir()
	if err != nil {
		return "", cli.Exit(err.Error(), 1)
	}
	return d, nil
}

// caDirArg repeats --dir in suggested commands when the user gave it.
func caDirArg(c *cli.Context, dir string) string {
	if c.IsSet("dir") {
		return " --dir " + dir
	}
	return ""
}

func loadCA(c *cli.Context) (*certs.CA, string, error) {
	dir, err := caDir(c)
	if err != nil {
		return nil, "", err
	}
	ca, err := certs.Load(dir, certs.Options{})
	if err != nil {
		return nil, "", cli.Exit(err.Error(), 1)
	}
	return ca, dir, nil
}

func caCommand() *cli.Command {
	return &cli.Command{
		Name:  "ca",
		Usage: "create, show and export the local CA used to intercept HTTPS",
		Description: `unicorn signs certificates for intercepted hosts with a CA made on this
machine. Nothing is shipped: run "unicorn ca init" once, then install the
exported certificate on each test device. Keep ca-key.pem private.`,
		Subcommands: []*cli.Command{caInitCommand(), caShowCommand(), caExportCommand()},
	}
}

func caInitCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create the CA (ECDSA P-256); --force replaces an existing one",
		Flags: []cli.Flag{
			caDirFlag(),
			&cli.BoolFlag{Name: "force", Usage: "replace an existing CA; devices must then trust the new one"},
			&cli.DurationFlag{Name: "validity", Value: certs.DefaultValidity, Usage: "how long the CA is valid, a `DURATION`"},
		},
		Action: func(c *cli.Context) error {
			dir, err := caDir(c)
			if err != nil {
				return err
			}
			exists := false
			for _, f := range []string{certs.CertFile, certs.KeyFile} {
				if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
					exists = true
				}
			}
			old, _ := certs.Load(dir, certs.Options{}) // only for the old fingerprint
			if exists && !c.Bool("force") {
				return cli.Exit(fmt.Sprintf("a CA already exists in %s; devices may trust it.\n"+
					"Run `unicorn ca init --force%s` to replace it (devices must then trust the new one).", dir, caDirArg(c, dir)), 1)
			}
			ca, err := certs.New(certs.Options{Validity: c.Duration("validity")})
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			if err := ca.Save(dir); err != nil {
				return cli.Exit(fmt.Sprintf("save the CA in %s: %v", dir, err), 1)
			}
			w := c.App.Writer
			if exists {
				fmt.Fprintln(w, "Replaced the CA. Devices that trusted the old one must now trust the new one:")
				fmt.Fprintln(w, "re-export it and install it on each device, then remove the old profile or certificate.")
				if old != nil {
					fmt.Fprintf(w, "old SHA-256  %s\n", old.Fingerprint())
				}
			} else {
				fmt.Fprintln(w, "Created a new CA.")
			}
			printCA(w, ca, dir)
			d := caDirArg(c, dir)
			fmt.Fprintf(w, "\nNext, install it on your test devices:\n"+
				"  unicorn ca export%s --format mobileconfig --out unicorn-ca.mobileconfig   (iOS, macOS)\n"+
				"  unicorn ca export%s --format pem --out unicorn-ca.pem                     (Android, browsers)\n", d, d)
			return nil
		},
	}
}

func printCA(w io.Writer, ca *certs.CA, dir string) {
	keyPath := filepath.Join(dir, certs.KeyFile)
	mode := "missing"
	if fi, err := os.Stat(keyPath); err == nil {
		mode = fmt.Sprintf("%04o", fi.Mode().Perm())
	}
	fmt.Fprintf(w, "subject      %s\n", ca.Cert.Subject)
	fmt.Fprintf(w, "valid        %s to %s\n", ca.Cert.NotBefore.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "SHA-256      %s\n", ca.Fingerprint())
	fmt.Fprintf(w, "certificate  %s\n", filepath.Join(dir, certs.CertFile))
	fmt.Fprintf(w, "private key  %s (mode %s; never share or commit it)\n", keyPath, mode)
}

func caShowCommand() *cli.Command {
	return &cli.Command{
		Name:  "show",
		Usage: "print the CA's subject, validity, fingerprint and files",
		Flags: []cli.Flag{caDirFlag()},
		Action: func(c *cli.Context) error {
			ca, dir, err := loadCA(c)
			if err != nil {
				return err
			}
			printCA(c.App.Writer, ca, dir)
			return nil
		},
	}
}

func caExportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write the CA certificate for installing on devices",
		UsageText: "unicorn ca export [--dir DIR] --format FORMAT [--out FILE]\n\nFORMAT is one of:" + caFormatHelp(),
		Flags: []cli.Flag{
			caDirFlag(),
			&cli.StringFlag{Name: "format", Required: true, Usage: "`FORMAT`: one of " + caFormatNames()},
			&cli.StringFlag{Name: "out", Usage: "write to `FILE` instead of stdout"},
		},
		Action: func(c *cli.Context) error {
			name := c.String("format")
			var export func(*certs.CA) ([]byte, error)
			for _, f := range caFormats {
				if f.name == name {
					export = f.export
				}
			}
			if export == nil {
				return cli.Exit(fmt.Sprintf("--format %q: want one of %s", name, caFormatNames()), 2)
			}
			ca, _, err := loadCA(c)
			if err != nil {
				return err
			}
			data, err := export(ca)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			if out := c.String("out"); out != "" {
				if err := os.WriteFile(out, data, 0o644); err != nil {
					return cli.Exit(err.Error(), 1)
				}
				fmt.Fprintf(c.App.ErrWriter, "wrote %s (%s, SHA-256 %s)\n", out, name, ca.Fingerprint())
				return nil
			}
			if name == "der" && isTerminal(c.App.Writer) {
				return cli.Exit("DER is binary: give --out FILE, or redirect stdout", 2)
			}
			_, err = c.App.Writer.Write(data)
			return err
		},
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
