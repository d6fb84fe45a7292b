//===- Process.cpp - Running a sibling tool ---------------------------------===//
#include "tools/common/Process.h"

#include <cerrno>
#include <climits>
#include <cstring>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace qlora::cli {

std::string executableDirectory() {
  char path[PATH_MAX];
  ssize_t length = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (length <= 0)
    return ".";
  path[length] = '\0';
  std::string full(path);
  size_t slash = full.rfind('/');
  return slash == std::string::npos ? "." : full.substr(0, slash);
}

Status runProcess(const std::vector<std::string> &argv) {
  std::vector<char *> args;
  for (const std::string &arg : argv)
    args.push_back(const_cast<char *>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int error = ::posix_spawn(&pid, args[0], nullptr, nullptr, args.data(),
                            environ);
  if (error != 0)
    return makeError("cannot run {}: {}", argv[0], std::strerror(error));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return makeError("waiting for {} failed: {}", argv[0],
                       std::strerror(errno));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return Status::ok();
  if (WIFSIGNALED(status))
    return makeError("{} was killed by signal {}", argv[0], WTERMSIG(status));
  return makeError("{} failed with exit code {}", argv[0],
                   WEXITSTATUS(status));
}

} // namespace qlora::cli
