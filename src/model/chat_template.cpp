// The openPangu chat template: "[unused9]role：content[unused10]" per message.
#include <cstring>
#include <string>
#include <vector>

#include "common/utf8.h"
#include "model/vocab.h"

namespace pangu {

// The markers must be pieces that parse_special turns into one token each (control or user-defined in
// tokenizer.model, or declared special in tokenizer_config.json): as ordinary pieces the rendered template would
// tokenize into characters.
bool Vocab::has_chat_tokens() const {
    const int32_t open = piece_id("[unused9]"), close = piece_id("[unused10]");
    return open >= 0 && close >= 0 && is_unsplittable(open) && is_unsplittable(close);
}

std::string Vocab::apply_chat_template(const pangu_chat_message *messages, size_t n,
                                       bool add_generation_prompt) const {
    if (!has_chat_tokens())
        fail(PANGU_ERR_UNSUPPORTED, "the vocabulary has no [unused9]/[unused10] chat tokens");
    if (n > 0 && !messages) fail(PANGU_ERR_INVALID_ARGUMENT, "messages is NULL");

    static const char *const kRoles[][2] = {
        {"system", "系统"}, {"user", "用户"}, {"assistant", "助手"}, {"tool", "工具"}, {"function", "方法"}};
    std::vector<const char *> roles(n);
    bool has_system = false;
    for (size_t i = 0; i < n; ++i) {
        const char *role = messages[i].role;
        if (!role) fail(PANGU_ERR_INVALID_ARGUMENT, "message " + std::to_string(i) + " has a NULL role");
        if (!messages[i].content)
            fail(PANGU_ERR_INVALID_ARGUMENT, "message " + std::to_string(i) + " has NULL content");
        for (const auto &r : kRoles)
            if (std::strcmp(role, r[0]) == 0 || std::strcmp(role, r[1]) == 0) roles[i] = r[1];
        if (!roles[i])
            fail(PANGU_ERR_INVALID_ARGUMENT, "message " + std::to_string(i) + " has unknown role '" + role + "'");
        const size_t bad = utf8_invalid_offset(messages[i].content);
        if (bad != std::string_view::npos)
            fail(PANGU_ERR_INVALID_UTF8,
                 "invalid UTF-8 in message " + std::to_string(i) + " at byte offset " + std::to_string(bad));
        has_system = has_system || roles[i] == kRoles[0][1];
    }

    std::string out;
    if (!has_system) out += "[unused9]系统：[unused10]";
    for (size_t i = 0; i < n; ++i) {
        out += "[unused9]";
        out += roles[i];
        out += "：";
        out += messages[i].content;
        out += "[unused10]";
    }
    if (add_generation_prompt) out += "[unused9]助手：";
    return out;
}

std::vector<int32_t> Vocab::chat_stop_tokens() const {
    if (!has_chat_tokens()) fail(PANGU_ERR_UNSUPPORTED, "the vocabulary has no [unused9]/[unused10] chat tokens");
    return {piece_id("[unused10]"), piece_id("[unused9]")};
}

}  // namespace pangu
