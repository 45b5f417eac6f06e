package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	logFormat string // console | json
	logLevel  string // debug | info | warn | error

	// log is the process's one logger, built from the flags above before any
	// subcommand runs.
	log *zap.Logger
}

func newRootCmd() *cobra.Command {
	opts := &globalOptions{}
	root := &cobra.Command{
		Use:   "peertune",
		Short: "Fine-tune Llama-family models (LoRA, full) data-parallel across peer nodes",
		Long: `peertune fine-tunes Llama-architecture language models with LoRA or full
fine-tuning. Peer nodes find each other by gossip and all-reduce only the
trainable gradients. With no flags, 'peertune train' fine-tunes a built-in tiny
model on built-in telecom calculation data.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			log, err := newLogger(opts)
			if err != nil {
				return err
			}
			opts.log = log
			return nil
		},
	}
	root.PersistentFlags().StringVar(&opts.logFormat, "log-format", "console", "log format: console or json")
	root.PersistentFlags().StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newVersionCmd())
	root.AddCommand(newBenchCmd(opts))
	root.AddCommand(newTrainCmd(opts), newEvalCmd(opts), newGenerateCmd(opts))
	root.AddCommand(newEstimateCmd(opts), newParamsCmd(opts), newStatusCmd(opts))
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the peertune version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "peertune %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

// newLogger builds the process's one zap logger from the global flags. Logs
// go to stderr so that --json outputs on stdout stay machine-readable.
func newLogger(opts *globalOptions) (*zap.Logger, error) {
	var cfg zap.Config
	switch opts.logFormat {
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
		cfg.DisableCaller = true
	case "json":
		cfg = zap.NewProductionConfig()
	default:
		return nil, fmt.Errorf("--log-format %q: want console or json", opts.logFormat)
	}
	lvl, err := zap.ParseAtomicLevel(opts.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", opts.logLevel, err)
	}
	cfg.Level = lvl
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	return cfg.Build()
}
