# The job runner of this recipe's stages. One variable switches it:
#   backend=run.pl     jobs on this machine (Kaldi's run.pl interface)
#   backend=slurm.pl   jobs as one Slurm array; site options (partition, gres, account) in conf/slurm.conf
backend=${S3TOK_BACKEND:-run.pl}
cmd="$root/utils/$backend"
if [ "$backend" = slurm.pl ] && [ -f conf/slurm.conf ]; then cmd="$cmd --config conf/slurm.conf"; fi
