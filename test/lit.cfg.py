# lit.cfg.py: the qlora lit suite (test/Dialect, test/Passes, ...). Run it
# through the configured build/test/lit.site.cfg.py, never directly.
import os
import re

import lit.formats

config.name = "qlora"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir"]

if not hasattr(config, "qlora_obj_root"):
    lit_config.fatal(
        "run lit on the build tree (build/test), which holds lit.site.cfg.py")

config.test_source_root = config.qlora_src_root
config.test_exec_root = config.qlora_obj_root

# Not lit tests: data files and the GoogleTest sources.
config.excludes = ["Inputs", "runtime"]

for tool, directory in [("qlora-opt", config.qlora_tools_dir),
                        ("FileCheck", config.llvm_tools_dir),
                        ("not", config.llvm_tools_dir),
                        ("split-file", config.llvm_tools_dir)]:
    path = os.path.join(directory, tool)
    if not os.path.exists(path):
        lit_config.fatal("missing tool %s: build it first" % path)
    # Only whole command words: never inside a path such as a-not-b.mlir.
    config.substitutions.append(
        (r"(?<![\w/.-])%s(?![\w/.-])" % re.escape(tool), path))
