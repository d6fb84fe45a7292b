//===- Checkpoint.cpp - Single-file and sharded checkpoint directories ------===//
//
// Opening a sharded directory cross-checks the index against the shards, so
// that a lookup never has to report an inconsistency later.
//
//===----------------------------------------------------------------------===//
#include "runtime/Checkpoint.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <sys/stat.h>

namespace qlora {

namespace {

std::string joinPath(const std::string &dir, const std::string &name) {
  if (dir.empty())
    return name;
  if (dir.back() == '/')
    return dir + name;
  return dir + "/" + name;
}

bool isRegularFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool pathExists(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

/// A shard name from an index must stay inside the checkpoint directory.
bool isSafeShardName(const std::string &name) {
  if (name.empty() || name.front() == '/')
    return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos)
      slash = name.size();
    if (name.compare(start, slash - start, "..") == 0)
      return false;
    start = slash + 1;
  }
  return true;
}

} // namespace

Expected<json::Value> readJsonFile(const std::string &path) {
  std::FILE *file = std::fopen(path.c_str(), "rb");
  if (!file)
    return makeError("{}: cannot open: {}", path, std::strerror(errno));
  std::string text;
  char buffer[65536];
  while (true) {
    size_t n = std::fread(buffer, 1, sizeof buffer, file);
    text.append(buffer, n);
    if (n < sizeof buffer)
      break;
  }
  bool readError = std::ferror(file) != 0;
  int err = errno;
  std::fclose(file);
  if (readError)
    return makeError("{}: cannot read: {}", path, std::strerror(err));
  Expected<json::Value> value = json::parse(text);
  if (!value)
    return value.error().withContext(path);
  return value;
}

Expected<CheckpointDir> CheckpointDir::open(const std::string &dir,
                                            const std::string &weightsName) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    return makeError("{}: cannot open checkpoint directory: {}", dir,
                     std::strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return makeError("{}: not a directory", dir);

  CheckpointDir result;
  result.dir_ = dir;
  std::string single = joinPath(dir, weightsName);
  std::string index = joinPath(dir, weightsName + ".index.json");
  if (isRegularFile(single)) {
    QLORA_RETURN_IF_ERROR(result.openSingle(single));
  } else if (pathExists(index)) {
    QLORA_RETURN_IF_ERROR(result.openSharded(index));
  } else {
    return makeError("{}: no {} or {}.index.json in the checkpoint directory",
                     dir, weightsName, weightsName);
  }
  return Expected<CheckpointDir>(std::move(result));
}

Status CheckpointDir::openSingle(const std::string &path) {
  Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  if (!file)
    return file.error();
  files_.push_back(std::make_unique<SafetensorsFile>(file.take()));
  const SafetensorsFile *opened = files_.back().get();
  for (const TensorInfo &info : opened->tensors())
    tensors_.emplace(info.name, CheckpointTensor{opened, &info});
  return Status::ok();
}

Status CheckpointDir::openSharded(const std::string &indexPath) {
  sharded_ = true;
  Expected<json::Value> index = readJsonFile(indexPath);
  if (!index)
    return index.error();
  if (!index->isObject())
    return makeError("{}: expected a JSON object, got {}", indexPath,
                     json::kindName(index->kind()));
  if (const json::Value *metadata = index->find("metadata")) {
    if (!metadata->isObject())
      return makeError("{}: 'metadata' must be an object, got {}", indexPath,
                       json::kindName(metadata->kind()));
    indexMetadata_ = *metadata;
  }
  const json::Value *weightMap = index->find("weight_map");
  if (!weightMap)
    return makeError("{}: missing 'weight_map'", indexPath);
  if (!weightMap->isObject())
    return makeError("{}: 'weight_map' must be an object, got {}", indexPath,
                     json::kindName(weightMap->kind()));

  // Shard name -> the first tensor that names it (for error messages).
  std::map<std::string, std::string> shards;
  for (const json::Member &member : weightMap->asObject()) {
    if (!member.second.isString())
      return makeError("{}: weight_map entry for tensor '{}' must be a shard "
                       "file name, got {}",
                       indexPath, member.first,
                       json::kindName(member.second.kind()));
    const std::string &shard = member.second.asString();
    if (!isSafeShardName(shard))
      return makeError("{}: tensor '{}' is mapped to shard '{}', which is not "
                       "a file name inside the checkpoint directory",
                       indexPath, member.first, shard);
    shards.emplace(shard, member.first);
  }

  // Open each shard once; remember which file holds which tensor.
  std::map<std::string, const SafetensorsFile *> shardFiles;
  std::map<std::string, std::pair<const SafetensorsFile *, const TensorInfo *>,
           std::less<>>
      contents;
  for (const auto &[shard, firstTensor] : shards) {
    Expected<SafetensorsFile> file =
        SafetensorsFile::open(joinPath(dir_, shard));
    if (!file)
      return makeError("{}: shard '{}' (holding tensor '{}'): {}", indexPath,
                       shard, firstTensor, file.message());
    files_.push_back(std::make_unique<SafetensorsFile>(file.take()));
    const SafetensorsFile *opened = files_.back().get();
    shardFiles.emplace(shard, opened);
    for (const TensorInfo &info : opened->tensors()) {
      auto [it, inserted] = contents.emplace(info.name,
                                             std::make_pair(opened, &info));
      if (!inserted)
        return makeError("{}: tensor '{}' appears in two shards, {} and {}",
                         indexPath, info.name, it->second.first->path(),
                         opened->path());
    }
  }

  for (const json::Member &member : weightMap->asObject()) {
    const std::string &shard = member.second.asString();
    const SafetensorsFile *file = shardFiles.find(shard)->second;
    auto it = contents.find(member.first);
    if (it == contents.end() || it->second.first != file)
      return makeError("{}: tensor '{}' is mapped to shard '{}', which does "
                       "not contain it{}",
                       indexPath, member.first, shard,
                       it == contents.end()
                           ? std::string()
                           : fmt::format(" (it is in {})",
                                         it->second.first->path()));
    tensors_.emplace(member.first,
                     CheckpointTensor{file, it->second.second});
  }
  for (const auto &[name, location] : contents)
    if (!tensors_.count(name))
      return makeError("{}: shard {} holds tensor '{}', which the index does "
                       "not list",
                       indexPath, location.first->path(), name);
  return Status::ok();
}

std::vector<const SafetensorsFile *> CheckpointDir::files() const {
  std::vector<const SafetensorsFile *> result;
  for (const auto &file : files_)
    result.push_back(file.get());
  return result;
}

std::vector<std::string> CheckpointDir::tensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto &entry : tensors_)
    names.push_back(entry.first);
  return names;
}

const CheckpointTensor *CheckpointDir::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Expected<CheckpointTensor> CheckpointDir::get(std::string_view name) const {
  if (const CheckpointTensor *tensor = find(name))
    return *tensor;
  return makeError("tensor '{}' not found in checkpoint {}", name, dir_);
}

Expected<ByteSpan> CheckpointDir::data(std::string_view name) const {
  Expected<CheckpointTensor> tensor = get(name);
  if (!tensor)
    return tensor.error();
  return tensor->file->data(*tensor->info);
}

} // namespace qlora
