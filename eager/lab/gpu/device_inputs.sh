# Sourced on the GPU machine after the runs printed by eager/lab/gpu/stage_inputs.sh:
#   source .device/setup.sh && source eager/lab/gpu/device_inputs.sh && bash eager/lab/gpu/gpu_lease_run.sh $OUT ...
# Assembles /root/stage/inputs.part* into the inputs tar, checks it against .device/inputs.sha256,
# unpacks it once, and exports EAGER_DATA_ROOT and EAGER_ARTIFACTS (also the base model under its
# real file name, which checkpoints record).
sum="$PWD/.device/inputs.sha256"
mkdir -p /root/stage
if [ ! -d /root/stage/inputs ]; then
  cat /root/stage/inputs.part* > /root/stage/inputs.tar 2>/dev/null
  if ! (cd /root/stage && sha256sum -c --status "$sum" 2>/dev/null); then
    rm -f /root/stage/inputs.tar
    echo "inputs incomplete: $(ls /root/stage) -- make the inputs part runs first" >&2
    return 1 2>/dev/null || exit 1
  fi
  tar xf /root/stage/inputs.tar -C /root/stage && rm -f /root/stage/inputs.tar
fi
export EAGER_DATA_ROOT=/root/stage/inputs/data EAGER_ARTIFACTS=/root/stage/inputs/artifacts
named=/root/stage/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -n "${EAGER_BASE_GGUF:-}" ] && [ "$EAGER_BASE_GGUF" != "$named" ]; then
  ln -sf "$EAGER_BASE_GGUF" "$named"
  export EAGER_BASE_GGUF=$named
fi
echo "inputs ready: $EAGER_DATA_ROOT, $EAGER_ARTIFACTS"
