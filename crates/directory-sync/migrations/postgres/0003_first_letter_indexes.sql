-- A one-letter search (the dialog's first keystroke) matches a twenty-sixth of the tenant by
-- UPN or mail; these indexes hand those matches over already in name order, so a page does
-- not sort tens of thousands of rows.
CREATE INDEX directory_users_by_upn_letter
    ON directory_users (tenant_id, substr(search_upn, 1, 1), search_name, object_id);
CREATE INDEX directory_users_by_mail_letter
    ON directory_users (tenant_id, substr(search_mail, 1, 1), search_name, object_id);
