-- Two- and three-letter searches by UPN or mail: matches of a common prefix ("ja", "jam")
-- run to tens of thousands in a large tenant; these indexes hand them over in name order too.
-- Longer searches narrow a three-letter group, still in name order.
CREATE INDEX directory_users_by_upn_2 ON directory_users (tenant_id, substr(search_upn, 1, 2), search_name, object_id);
CREATE INDEX directory_users_by_upn_3 ON directory_users (tenant_id, substr(search_upn, 1, 3), search_name, object_id);
CREATE INDEX directory_users_by_mail_2 ON directory_users (tenant_id, substr(search_mail, 1, 2), search_name, object_id);
CREATE INDEX directory_users_by_mail_3 ON directory_users (tenant_id, substr(search_mail, 1, 3), search_name, object_id);
-- Mail is never looked up exactly; its prefix indexes serve every mail search.
DROP INDEX directory_users_by_mail;
