# Starts IRkernel with a SparkR session, on the kernel's host, under spark-submit.
# Copied into the kernelspec by `kernelfleet spec install --language r --spark`; bin/run.sh runs
# it as: spark-submit ... spark_kernel.R <connection file> <init mode>.
# lazy: `spark` is an R promise, created on first use; eager: created before the kernel listens;
# none: no Spark. The application name comes from spark-submit (--name $KERNEL_ID).
args <- commandArgs(trailingOnly = TRUE)
connection_file <- args[[1]]
mode <- if (length(args) >= 2) args[[2]] else "lazy"
start_spark <- function() {
  library(SparkR, lib.loc = file.path(Sys.getenv("SPARK_HOME"), "R", "lib"))
  SparkR::sparkR.session()
}
if (mode == "eager") {
  spark <- start_spark()
} else if (mode == "lazy") {
  delayedAssign("spark", start_spark(), assign.env = globalenv())
}
reg.finalizer(globalenv(), function(e) try(SparkR::sparkR.session.stop(), silent = TRUE),
              onexit = TRUE)
IRkernel::main(connection_file)
